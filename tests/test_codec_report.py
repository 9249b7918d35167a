"""codec_report: the round-trip report CLI on a folder with good and broken files."""

import json
from pathlib import Path

import helpers
import pytest
from helpers import CHORDS_AND_RESTS, DRUMS, Track, write_midi

from jaxmusic import codec, codec_report


def _fixture_folder(tmp_path):
    write_midi(tmp_path / "classical" / "a.mid", [Track(CHORDS_AND_RESTS)])
    write_midi(tmp_path / "jazz" / "b.mid", [Track(CHORDS_AND_RESTS[:6]), Track(DRUMS, channel=9)])
    (tmp_path / "jazz" / "page.mid").write_bytes(helpers.bad_midi_bytes()["html"])
    (tmp_path / "rock" / "clip.mid").parent.mkdir()
    (tmp_path / "rock" / "clip.mid").write_bytes(helpers.bad_midi_bytes()["data_byte_above_127"])
    return tmp_path


def test_report_cli_writes_json(tmp_path, capsys):
    folder = _fixture_folder(tmp_path / "midi")
    out = tmp_path / "report.json"
    args = [
        str(folder),
        "--min_count",
        "1",
        "--json",
        str(out),
        "--codec_out",
        str(tmp_path / "c.json"),
    ]
    rc = codec_report.main([*args, "--workers", "1"])
    assert rc == 0
    r = json.loads(out.read_text())
    assert (r["files_found"], r["files_read"], r["files_rejected"]) == (4, 3, 1)
    assert r["rejected"][0]["reason"] == "not a MIDI file: looks like HTML/XML"
    assert r["recovered"][0]["recovered"] == ["clipped data bytes above 127"]
    assert r["notes"] == len(CHORDS_AND_RESTS) + 6 + 2
    assert r["fidelity"]["onset_f1"] == pytest.approx(1.0)
    assert codec.load(tmp_path / "c.json").fingerprint == r["codec"]["fingerprint"]
    assert "onset P / R / F1" in capsys.readouterr().out


def test_report_cli_bad_input(tmp_path, capsys):
    assert codec_report.main([str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert codec_report.main([str(tmp_path)]) == 2
    assert "no MIDI files" in capsys.readouterr().err
    folder = _fixture_folder(tmp_path / "midi")
    assert codec_report.main([str(folder), "--json", str(tmp_path / "no" / "r.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_report_goes_on_past_a_malformed_file(tmp_path, capsys):
    folder = _fixture_folder(tmp_path / "midi")
    (folder / "rock" / "long_delta.mid").write_bytes(helpers.bad_midi_bytes()["long_delta_time"])
    out = tmp_path / "report.json"
    assert codec_report.main([str(folder), "--min_count", "1", "--json", str(out), "--workers", "1"]) == 0
    r = json.loads(out.read_text())
    assert (r["files_found"], r["files_read"], r["files_rejected"]) == (5, 3, 2)
    reasons = {Path(x["path"]).name: x["reason"] for x in r["rejected"]}
    assert "variable-length quantity longer than 4 bytes" in reasons["long_delta.mid"]
    assert r["internal_errors"] == []
    assert "internal errors" not in capsys.readouterr().err


def test_report_gives_the_round_trip_per_instrument_with_drums(tmp_path, capsys):
    folder = _fixture_folder(tmp_path / "midi")
    out = tmp_path / "report.json"
    args = [str(folder), "--min_count", "1", "--instruments", "family", "--json", str(out), "--workers", "1"]
    assert codec_report.main(args) == 0
    r = json.loads(out.read_text())
    per = r["fidelity"]["per_instrument"]
    assert set(per) == {"piano", "drums"} and per["drums"]["notes"] == len(DRUMS)
    assert r["notes"] == len(CHORDS_AND_RESTS) + 6 + 2 + len(DRUMS)  # the drums are read now
    for v in per.values():
        assert v["onset_f1"] == pytest.approx(1.0) and v["same_instrument"] == 1.0
    assert "per instrument" in capsys.readouterr().out
