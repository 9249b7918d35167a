"""How good a trained model is: the report of `python -m jaxmusic.evaluate`, in sections.

For a model (`inference.Generator`) on a split of its dataset, `run` returns a JSON
report whose sections each come from one module here:

  likelihood   per-note NLL (nats, bits), perplexity and top-1 accuracy, overall and per
               genre, over every note (and EOS) of the split once: training's evaluation;
  baselines    an add-one unigram and interpolated Kneser-Ney n-grams fit on the train
               split (`jaxmusic.ngram`), on the same targets;
  samples      N samples, each continuing the opening `primer_notes` notes of a piece of
               the split (drawn uniformly, with its genre) for `num_notes` notes, beside the
               true continuation of every piece long enough to prime; each sample cut to
               the length of its piece's real continuation (`samples.Continuations`);
  statistics   Yang & Lerch's overlap area and KL divergence of each music statistic
               (`music_stats`), real music's own overlap in the samples' place (the train
               split's continuations), degenerate samples beside real music's share;
  keys         how often a continuation keeps its primer's Krumhansl-Schmuckler key, with
               95% intervals, for the samples, the split and the train split;
  genre        a classifier of the statistics fit on the train split: how often a sample
               asked for genre G is classified G, beside its accuracy on real pieces;
  long_form    long samples (EOS never drawn): their first and last notes against the real;
  sweep        the statistics again for each sampling setting of a grid.

`evaluator.run` puts the sections together; `report` makes the printed table and the
plots from the report alone.
"""
