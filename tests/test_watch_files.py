"""``satmon watch`` on files being written: verl JSONL and console, TRL console; safe halts.

The writer is a separate process (tests/_watch_writer.py) that logs a seeded memorizing or
generalizing run at speed, saves verl checkpoints on its save_freq and obeys a real stop
(a stop file, SIGTERM). The watcher's decisions are compared with a SaturationMonitor fed the
same records in one go.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _watch_support import (HELDOUT_KEY, REPO, TRAIN_KEY, decision_entries, expected_entries,
                            log_entries, reference_decisions, saved_state, start_writer,
                            verl_records)

from satmon.cli import main
from satmon.watch import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_FINISHED, EXIT_HALTED, EXIT_WATCHING

# The console script, as a user runs it (`python -m satmon.cli` would register no subcommand
# but analyze: the module runs as __main__, apart from the satmon.cli the commands import).
SATMON = str(Path(sys.executable).with_name("satmon"))
MON = ["--warmup-steps", "30", "--heldout-n", "math=500"]
FAST = ["--interval", "0.05", "--timeout", "60", "--status-every", "0"]


def _jsonl(records) -> str:
    return "".join(json.dumps({"step": s, "data": d}) + "\n" for s, d in records)


def _state_of(path):
    (run,) = saved_state(path)["runs"].values()
    return run


def _assert_same_as_monitor(log, state_file, records, total):
    run = _state_of(state_file)
    mon, decisions = reference_decisions(records, total_steps=total, warmup_steps=30,
                                         upto=run["last_fed"])
    assert decision_entries(log) == expected_entries(decisions)
    # The engine went down the same path: its whole saved state is the same.
    assert run["monitor"] == json.loads(json.dumps(mon.state_dict()))
    return run


def test_jsonl_halt_waits_for_later_checkpoint_then_stop_file_once(tmp_path, capsys):
    log_file, ckpt, stop = tmp_path / "run.jsonl", tmp_path / "ckpt", tmp_path / "stop.json"
    writer = start_writer("--out", str(log_file), "--total-steps", "200", "--delay", "0.01",
                          "--save-freq", "25", "--checkpoint-dir", str(ckpt), "--stop-file",
                          str(stop), "--partial-at", "45", "--linger", "30")
    try:
        rc = main(["watch", str(log_file), "--total-steps", "200", *MON, *FAST,
                   "--checkpoint-dir", str(ckpt), "--stop-file", str(stop),
                   "--out", str(tmp_path / "rep"), "--report-format", "json,txt"])
        writer.wait(timeout=30)
    finally:
        writer.kill()
    out = capsys.readouterr().out
    assert rc == EXIT_HALTED, out
    assert (tmp_path / "run.jsonl.stopped").exists(), "the writer did not obey the stop file"
    decision = json.loads(stop.read_text())
    # Halted at 80; checkpoints every 25, so the first at or after the halt is global_step_100.
    assert decision["step"] == 80 and decision["reason"] == "memorizing"
    assert decision["checkpoint"]["step"] == 100
    assert stop.stat().st_mtime >= (ckpt / "global_step_100").stat().st_mtime
    log = tmp_path / "rep" / "decisions.jsonl"
    entries = log_entries(log)
    assert [e["event"] for e in entries].count("action") == 1
    assert "waiting for a checkpoint at or after step 80" in out
    run = _assert_same_as_monitor(log, str(log) + ".state.json", verl_records(total_steps=200),
                                  200)
    assert run["status"] == "halted" and run["halt"]["step"] == 80
    # The partial line at step 45 was waited for, not lost or mis-read.
    assert [s for s, _ in run["series"]["train"]][:50] == list(range(1, 51))
    # The offline replay of the same log halts at the same step.
    from satmon.analysis import read_run
    from satmon.replay import replay

    offline = read_run(str(log_file))
    offline.heldout["math"] = dataclasses.replace(offline.heldout["math"], sample_size=500)
    assert replay(offline, total_steps=200, warmup_steps=30).halt_step == 80
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["runs"][0]["replay"]["halt_step"] == 80


@pytest.mark.slow
def test_signal_reaches_the_real_writer_once_and_restart_does_not_act(tmp_path):
    log_file, ckpt = tmp_path / "run.jsonl", tmp_path / "ckpt"
    writer = start_writer("--out", str(log_file), "--total-steps", "200", "--delay", "0.01",
                          "--save-freq", "25", "--checkpoint-dir", str(ckpt), "--linger", "60")
    argv = ["watch", str(log_file), "--total-steps", "200", *MON, *FAST,
            "--checkpoint-dir", str(ckpt), "--signal", "SIGTERM", "--pid", str(writer.pid),
            "--decision-log", str(tmp_path / "d.jsonl")]
    try:
        # The watcher runs as its own process, as a user would run it.
        watcher = subprocess.run([SATMON, *argv], cwd=REPO,
                                 capture_output=True, text=True, timeout=90)
        assert writer.wait(timeout=20) == 143
    finally:
        writer.kill()
    assert watcher.returncode == EXIT_HALTED, watcher.stdout + watcher.stderr
    assert (tmp_path / "run.jsonl.sigterm").exists()
    killed_at = int((tmp_path / "run.jsonl.sigterm").read_text())
    assert 100 <= killed_at < 200  # after the checkpoint at 100, while the job still ran
    entries = log_entries(tmp_path / "d.jsonl")
    assert [e["event"] for e in entries].count("action") == 1
    # A second watcher on the same state: the run is halted, nothing is done again.
    again = subprocess.run([SATMON, *argv, "--once"], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == EXIT_HALTED, again.stdout + again.stderr
    assert [e["event"] for e in log_entries(tmp_path / "d.jsonl")].count("action") == 1


@pytest.mark.slow
def test_restart_mid_run_same_decisions_and_a_watcher_killed_while_acting(tmp_path):
    records = verl_records(total_steps=200)
    full = _jsonl(records)
    # One uninterrupted watcher over the whole log, acting at once.
    ref_log = tmp_path / "ref" / "d.jsonl"
    (tmp_path / "whole.jsonl").write_text(full)
    assert main(["watch", str(tmp_path / "whole.jsonl"), "--total-steps", "200", *MON,
                 "--once", "--action", "flag", "--decision-log", str(ref_log)]) == EXIT_HALTED
    # Now the same log arriving in pieces, with a fresh watcher (from the state) per piece,
    # and an --on-halt command that kills its own watcher right after acting.
    live, count = tmp_path / "live.jsonl", tmp_path / "count.txt"
    log = tmp_path / "live" / "d.jsonl"
    argv = [SATMON, "watch", str(live), "--total-steps", "200",
            *MON, "--once", "--no-wait-checkpoint", "--decision-log", str(log),
            "--on-halt", f"echo acted >> {count}; kill -9 $PPID"]
    cuts = [0, 1000, 2577, 6000, len(full.encode())]  # byte offsets, mid-line on purpose
    data = full.encode()
    codes = []
    for a, b in zip(cuts, cuts[1:]):
        with open(live, "ab") as fh:
            fh.write(data[a:b])
        codes.append(subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                                    timeout=60).returncode)
    codes.append(subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                                timeout=60).returncode)
    assert count.read_text().splitlines() == ["acted"]  # never twice
    assert -9 in codes  # the watcher was killed while acting ...
    assert codes[-1] == EXIT_HALTED  # ... and the next one reported the halt without acting
    events = [e["event"] for e in log_entries(log)]
    assert events.count("action") == 1
    assert any("not repeated" in e["message"] for e in log_entries(log)
               if e["event"] == "action")
    # Same decisions as the uninterrupted watcher, and as the monitor fed in one go.
    got, want = decision_entries(log), decision_entries(ref_log)
    assert got[:len(want)] == want and want[-1][1] == "halt"
    run = _assert_same_as_monitor(log, str(log) + ".state.json", records, 200)
    assert run["status"] == "halted" and run["last_fed"] == 200


@pytest.mark.parametrize("mode", ["truncate", "replace"])
def test_truncated_or_replaced_log_continues_the_run(tmp_path, capsys, mode):
    log_file = tmp_path / "run.jsonl"
    writer = start_writer("--out", str(log_file), "--regime", "generalizing", "--seed", "3",
                          "--total-steps", "200", "--delay", "0.01", "--save-freq", "25",
                          "--checkpoint-dir", str(tmp_path / "ckpt"), "--restart-at", "130",
                          "--restart-mode", mode, "--sync-state",
                          str(tmp_path / "d.jsonl.state.json"), "--sync-step", "129")
    try:
        rc = main(["watch", str(log_file), "--total-steps", "200", *MON, *FAST,
                   "--decision-log", str(tmp_path / "d.jsonl")])
        writer.wait(timeout=30)
    finally:
        writer.kill()
    out = capsys.readouterr().out
    assert rc == EXIT_FINISHED, out
    assert ("truncated" if mode == "truncate" else "replaced") in out \
        or "rewritten" in out
    records = verl_records("generalizing", seed=3, total_steps=200)
    run = _assert_same_as_monitor(tmp_path / "d.jsonl", tmp_path / "d.jsonl.state.json",
                                  records, 200)
    assert run["status"] == "finished" and run["last_fed"] == 200
    assert [s for s, _ in run["series"]["train"]] == list(range(1, 201))
    # The job resumes from its checkpoint at 125: steps 126..129 come again and are skipped.
    assert run["repeats"] == 4


def test_file_that_disappears_and_reappears_is_followed(tmp_path, capsys):
    records = verl_records(total_steps=200)
    path = tmp_path / "run.jsonl"
    argv = ["watch", str(path), "--total-steps", "200", *MON, "--once", "--action", "flag",
            "--decision-log", str(tmp_path / "d.jsonl")]
    assert main(argv) == EXIT_WATCHING  # not there yet: waited for
    path.write_text(_jsonl(records[:40]))
    assert main(argv) == EXIT_WATCHING
    path.unlink()
    assert main(argv) == EXIT_WATCHING
    assert "disappeared" in capsys.readouterr().out
    path.write_text(_jsonl(records))
    assert main(argv) == EXIT_HALTED
    assert "is back" in capsys.readouterr().out
    _assert_same_as_monitor(tmp_path / "d.jsonl", tmp_path / "d.jsonl.state.json", records, 200)


def test_verl_console_tail_with_ansi_reads_planned_total_and_finishes(tmp_path, capsys):
    log_file = tmp_path / "train.log"
    writer = start_writer("--out", str(log_file), "--format", "console", "--regime",
                          "generalizing", "--seed", "3", "--total-steps", "200", "--delay",
                          "0.005")
    try:
        rc = main(["watch", str(log_file), *MON, *FAST, "--decision-log",
                   str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "rep"),
                   "--report-format", "json"])
        writer.wait(timeout=30)
    finally:
        writer.kill()
    out = capsys.readouterr().out
    assert rc == EXIT_FINISHED, out
    assert "finished: the last planned step (200) was logged" in out
    assert "\x1b" not in out
    records = verl_records("generalizing", seed=3, total_steps=200)
    # The console prints values as Python prints them: the same floats as the JSONL.
    run = _assert_same_as_monitor(tmp_path / "d.jsonl", tmp_path / "d.jsonl.state.json",
                                  records, 200)
    assert run["total_steps"] == 200 and run["monitor_kwargs"]["total_steps"] == 200
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["runs"][0]["replay"][
        "halt_step"] is None


def test_trl_console_in_pieces_equals_one_pass_and_the_reader(tmp_path):
    from _log_twins import write_trl_console

    from satmon.analysis import read_run

    twin = write_trl_console(tmp_path / "whole.log", steps=49, seed=13)
    data = twin.path.read_bytes()
    keys = ["--train-key", "rewards/mc_idx_reward/mean", "--warmup-steps", "10",
            "--total-steps", "49", "--action", "flag"]
    one = tmp_path / "one" / "d.jsonl"
    for _ in range(2):  # the second pass is quiet: the last step is complete
        main(["watch", str(twin.path), *keys, "--once", "--decision-log", str(one)])
    live = tmp_path / "live.log"
    piecewise = tmp_path / "pieces" / "d.jsonl"
    for a in range(0, len(data), 997):  # odd-sized pieces: cut inside dicts and bars
        with open(live, "ab") as fh:
            fh.write(data[a:a + 997])
        main(["watch", str(live), *keys, "--once", "--decision-log", str(piecewise)])
    main(["watch", str(live), *keys, "--once", "--decision-log", str(piecewise)])
    run_one = _state_of(str(one) + ".state.json")
    run_pieces = _state_of(str(piecewise) + ".state.json")
    assert run_one["status"] == run_pieces["status"] == "finished"
    assert run_pieces["series"] == run_one["series"]
    assert decision_entries(piecewise) == decision_entries(one)
    offline = read_run(str(twin.path), train_key="rewards/mc_idx_reward/mean")
    assert [s for s, _ in run_one["series"]["train"]] == offline.train_reward.steps.tolist()
    assert [v for _, v in run_one["series"]["train"]] == offline.train_reward.values.tolist()


def test_on_halt_command_gets_the_decision_and_a_failing_one_is_reported(tmp_path, capsys):
    path = tmp_path / "run.jsonl"
    path.write_text(_jsonl(verl_records(total_steps=200)[:120]))
    env_file = tmp_path / "env.txt"
    rc = main(["watch", str(path), "--total-steps", "200", *MON, "--once",
               "--no-wait-checkpoint", "--decision-log", str(tmp_path / "a.jsonl"),
               "--on-halt", f"env | grep '^SATMON_' > {env_file}"])
    assert rc == EXIT_HALTED
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines()
               if line.split("=", 1)[0] != "SATMON_DECISION" and "=" in line)
    assert env["SATMON_HALT_STEP"] == "80" and env["SATMON_REASON"] == "memorizing"
    assert env["SATMON_NO_CHECKPOINT"] == "1" and env["SATMON_RUN"] == "run"
    assert env["SATMON_MESSAGE"].startswith("MEMORIZING at step 80")
    rc = main(["watch", str(path), "--total-steps", "200", *MON, "--once",
               "--no-wait-checkpoint", "--decision-log", str(tmp_path / "b.jsonl"),
               "--on-halt", "echo no job to stop >&2; exit 3"])
    out = capsys.readouterr().out
    assert rc == EXIT_FAILED
    assert "exited with status 3: no job to stop" in out


def test_checkpoint_that_never_comes_acts_after_the_grace(tmp_path, capsys):
    path = tmp_path / "run.jsonl"
    path.write_text(_jsonl(verl_records(total_steps=200)[:120]))
    (tmp_path / "ckpt").mkdir()
    stop = tmp_path / "stop.json"
    t0 = time.monotonic()
    rc = main(["watch", str(path), "--total-steps", "200", *MON, "--interval", "0.05",
               "--timeout", "30", "--checkpoint-dir", str(tmp_path / "ckpt"), "--grace", "0.5",
               "--stop-file", str(stop), "--decision-log", str(tmp_path / "d.jsonl")])
    assert rc == EXIT_HALTED
    assert 0.5 <= time.monotonic() - t0 < 20
    assert "within the grace of 0.5 s; acting anyway" in capsys.readouterr().out
    assert json.loads(stop.read_text())["checkpoint"] is None
    events = [e["event"] for e in log_entries(tmp_path / "d.jsonl")]
    assert events.count("grace_expired") == 1 and events.count("action") == 1


def test_missing_training_key_fails_with_the_keys_that_exist(tmp_path, capsys):
    path = tmp_path / "run.jsonl"
    path.write_text(_jsonl([(s, {"loss": 0.5, "timing_s/gen": 1.0}) for s in range(1, 8)]))
    rc = main(["watch", str(path), "--once", "--decision-log", str(tmp_path / "d.jsonl")])
    out = capsys.readouterr().out
    assert rc == EXIT_FAILED
    assert "no training-reward key found" in out and "'loss', 'timing_s/gen'" in out
    rc = main(["watch", str(path), "--once", "--train-key", "critic/score/mean",
               "--decision-log", str(tmp_path / "e.jsonl")])
    out = capsys.readouterr().out
    assert rc == EXIT_FAILED and "'critic/score/mean' is not in the log" in out


def test_bad_lines_are_skipped_with_a_note(tmp_path, capsys):
    records = verl_records(total_steps=200)[:60]
    text = _jsonl(records[:30]) + "{not json\n" + '{"step": 1.5, "data": {}}\n' + \
        _jsonl(records[30:])
    (tmp_path / "run.jsonl").write_text(text)
    assert main(["watch", str(tmp_path / "run.jsonl"), "--total-steps", "200", *MON, "--once",
                 "--decision-log", str(tmp_path / "d.jsonl")]) == EXIT_WATCHING
    out = capsys.readouterr().out
    assert "line 31: skipped a line that is not valid JSON" in out
    assert "line 32: skipped: step 1.5" in out
    assert _state_of(tmp_path / "d.jsonl.state.json")["last_fed"] == records[-1][0]


def test_bad_input_is_refused_with_a_clear_message(tmp_path, capsys):
    path = tmp_path / "run.jsonl"
    path.write_text(_jsonl(verl_records(total_steps=200)[:5]))
    base = ["watch", str(path), "--once", "--decision-log", str(tmp_path / "d.jsonl")]
    cases = [
        (["--signal", "TERM"], "--signal and --pid go together"),
        (["--signal", "NOPE", "--pid", "1"], "is not a signal"),
        (["--heldout-n", "math=0"], "--heldout-n takes NAME=N"),
        (["--action", "stop"], "--action stop needs a stop action"),
        (["--stop-file", str(tmp_path / "s")], "pass --checkpoint-dir DIR"),
        (["--monitor-option", "risk=2"], "'risk' parameter of SaturationMonitor"),
        (["--preset", "openrlhf", "--report-format", "pdf", "--out", str(tmp_path)],
         "unknown format"),
    ]
    for extra, message in cases:
        assert main(base + extra) == EXIT_BAD_INPUT, extra
        assert message in capsys.readouterr().err, extra
    (tmp_path / "d.jsonl.state.json").write_text('{"version": 1, "runs": {"x": ')
    assert main(base) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "d.jsonl.state.json cannot be read" in err and "move it away" in err
    pid = subprocess.Popen([sys.executable, "-c", "pass"])
    pid.wait()
    assert main(base + ["--signal", "TERM", "--pid", str(pid.pid), "--no-wait-checkpoint",
                        "--state", str(tmp_path / "fresh.json")]) == EXIT_BAD_INPUT
    assert f"--pid {pid.pid}: no such process" in capsys.readouterr().err


def test_checkpoint_rules(tmp_path):
    from satmon.watch.halting import VERL_MARKER, find_checkpoint

    assert find_checkpoint(tmp_path / "absent", 0) is None
    (tmp_path / "global_step_50").mkdir()
    (tmp_path / "global_step_100").mkdir()
    assert find_checkpoint(tmp_path, 60).step == 100  # no marker file: the folder counts
    (tmp_path / VERL_MARKER).write_text("50")
    assert find_checkpoint(tmp_path, 60) is None  # global_step_100 is still being saved
    (tmp_path / VERL_MARKER).write_text("100")
    assert find_checkpoint(tmp_path, 60).path.endswith("global_step_100")
    hf = tmp_path / "hf"
    (hf / "checkpoint-40").mkdir(parents=True)
    assert find_checkpoint(hf, 30) is None  # no trainer_state.json yet
    (hf / "checkpoint-40" / "trainer_state.json").write_text("{}")
    assert find_checkpoint(hf, 30).kind == "transformers"


def test_key_presets_openrlhf_and_transformers_tensorboard_tags():
    from satmon.watch.metric_keys import WatchKeys

    r = WatchKeys().resolve(["train/reward", "train/kl", "train/response_length",
                             "eval/eval_math_pass1", "eval/eval_math_pass4",
                             "eval/eval_gsm8k_pass1", "eval/eval_avg_pass1"])
    assert r.preset == "openrlhf" and r.train_key == "train/reward"
    assert dict(r.heldout) == {"math": "eval/eval_math_pass1", "gsm8k": "eval/eval_gsm8k_pass1"}
    assert dict(r.aux) == {"kl": "train/kl", "response_length": "train/response_length"}
    r = WatchKeys(preset="openrlhf").resolve(["reward", "eval_aime_pass1"])
    assert (r.train_key, dict(r.heldout)) == ("reward", {"aime": "eval_aime_pass1"})
    r = WatchKeys().resolve(["train/reward", "train/entropy", "eval/rewards/acc/mean"])
    assert r.preset == "trl" and r.train_key == "train/reward"
    assert dict(r.heldout) == {"acc": "eval/rewards/acc/mean"}
    r = WatchKeys().resolve([TRAIN_KEY, HELDOUT_KEY.replace("@", "_at_")])
    assert r.preset == "verl" and dict(r.heldout) == {"math": "val-core/math/acc/mean_at_1"}
    with pytest.raises(ValueError, match="must be one of"):
        WatchKeys(preset="wandb")


def test_watch_help_documents_exit_codes_and_environment():
    proc = subprocess.run([SATMON, "watch", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "100"})
    assert proc.returncode == 0
    for text in ("exit status: 0 finished", "3 halted", "SATMON_HALT_STEP", "--stop-file",
                 "MLFLOW_ALLOW_FILE_STORE", "--idle-exit", "--grace"):
        assert text in proc.stdout, text


def test_decision_log_path_defaults_beside_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("run.jsonl").write_text(_jsonl(verl_records(total_steps=200)[:20]))
    assert main(["watch", "run.jsonl", "--once"]) == EXIT_WATCHING
    assert Path("satmon-watch-decisions.jsonl").exists()
    assert Path("satmon-watch-decisions.jsonl.state.json").exists()


def test_two_runs_at_once_idle_exit_and_the_most_serious_status(tmp_path, capsys):
    # A memorizing run that is halted, and a generalizing one that stops logging at step 120
    # without saying so: it has finished once no new data came for --idle-exit seconds.
    (tmp_path / "mem.jsonl").write_text(_jsonl(verl_records(total_steps=200)))
    gen = verl_records("generalizing", seed=3, total_steps=200)
    (tmp_path / "gen.jsonl").write_text(_jsonl(gen[:121]))
    t0 = time.monotonic()
    rc = main(["watch", str(tmp_path / "mem.jsonl"), str(tmp_path / "gen.jsonl"), *MON,
               "--action", "flag", "--idle-exit", "0.5", "--interval", "0.05", "--timeout", "30",
               "--decision-log", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "rep"),
               "--report-format", "json"])
    out = capsys.readouterr().out
    assert rc == EXIT_HALTED and 0.5 <= time.monotonic() - t0 < 25
    assert "[gen] finished: no new data for 0.5 s (--idle-exit); last step 120" in out
    runs = saved_state(tmp_path / "d.jsonl.state.json")["runs"]
    assert sorted(r["status"] for r in runs.values()) == ["finished", "flagged"]
    # Without --total-steps the monitor assumes the run lasts as long again as it has so far.
    assert all(r["monitor_kwargs"]["total_steps"] is None for r in runs.values())
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert sorted(r["run"] for r in report["runs"]) == ["gen", "mem"]


def test_status_line_is_redrawn_in_place_on_a_terminal(tmp_path):
    import argparse
    import io

    from satmon.watch.commands import _watch_arguments, build_watcher

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    (tmp_path / "run.jsonl").write_text(_jsonl(verl_records(total_steps=200)[:40]))
    parser = argparse.ArgumentParser()
    _watch_arguments(parser)
    args = parser.parse_args([str(tmp_path / "run.jsonl"), "--once", "--total-steps", "200",
                              "--decision-log", str(tmp_path / "d.jsonl")])
    term = Terminal()
    watcher = build_watcher(args, stream=term)
    assert watcher.run() == EXIT_WATCHING
    text = term.getvalue()
    assert "\r\x1b[2K[run] watching | step 39/200 | reward " in text
    # An event line first clears the status line it replaces; the status is redrawn after.
    assert "\r\x1b[2K[run] --once: one pass done" in text
    assert text.endswith("\n") and text.split("\n")[-2].startswith("\r\x1b[2K[run] watching")


def test_real_verl_console_log_halts_where_the_offline_replay_does(tmp_path, real_logs):
    from satmon.analysis import read_run
    from satmon.replay import replay

    path = real_logs / "raw" / "diqiuzhuanzhuan__verldata__run_logs_qwen2-7b_math_megatron.log"
    assert main(["watch", str(path), "--once", "--decision-log",
                 str(tmp_path / "d.jsonl")]) == EXIT_HALTED
    run = _state_of(tmp_path / "d.jsonl.state.json")
    assert run["total_steps"] == 105  # verl's "Total training steps: 105"
    offline = read_run(str(path))
    result = replay(offline, total_steps=105)
    assert run["halt"]["step"] == result.halt_step and result.halt_step is not None
    assert run["halt"]["reason"] == result.reason.value
    n = len(run["series"]["train"])
    assert [v for _, v in run["series"]["train"]] == offline.train_reward.values.tolist()[:n]
