"""Published inputs by name (pipeline/fetch.py) and the weights that share its downloader.

A loopback HTTP server (http.server in a thread, Range requests supported) serves generated
files at the publishers' paths; `RSA_FETCH_BASE_URL` points the registry at it. Covered: the
progress bar, resume of a cut download with `Range: bytes=K-`, a server that ignores Range, the
recorded SHA-256 enforced on later fetches (no network, no silent re-download), the publishers'
digests (registry, file name, Hugging Face's X-Linked-Etag), `--from FILE`, network errors as
one line, and `make fetch` / `make weights MODEL=motionbert` end to end, ending with one
training epoch on the fetched NTU pickle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline import fetch
from pipeline.__main__ import main
from pipeline.datasets import NTU60
from pipeline.schema import write_index
from tests.helpers import make_record
from tests.test_make import make

REPO = Path(__file__).resolve().parents[2]
NTU60_PATH = "/mmaction/pyskl/data/nturgbd/ntu60_hrnet.pkl"
MB_PATH = "/walterzhu/MotionBERT/resolve/main/checkpoint/pretrain/MB_release/latest_epoch.bin"
PYSKL_KEYS = ("frame_dir", "label", "img_shape", "original_shape", "total_frames", "keypoint", "keypoint_score")


class Server:
    """What the loopback server serves and what it was asked."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}  # path -> bytes sent before closing, on the next request only
        self.ignore_range: set[str] = set()
        self.redirect: dict[str, tuple[str, str]] = {}  # path -> (target path, X-Linked-Etag)
        self.throttle: dict[str, float] = {}  # path -> seconds between 4 KiB chunks
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.url = ""


def _handler(state: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            state.requests.append((self.path, self.headers.get("Range")))
            if self.path in state.redirect:
                target, tag = state.redirect[self.path]
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("X-Linked-Etag", f'"{tag}"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = state.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            rng = self.headers.get("Range")
            if rng and self.path not in state.ignore_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.path in state.cut:
                body = body[: state.cut.pop(self.path)]  # then the connection closes: a cut download
            step = 4096 if self.path in state.throttle else len(body) or 1
            for i in range(0, len(body), step):
                self.wfile.write(body[i : i + step])
                if self.path in state.throttle:
                    self.wfile.flush()
                    time.sleep(state.throttle[self.path])

    return Handler


@pytest.fixture
def server(tmp_path, monkeypatch):
    state = Server()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    monkeypatch.setenv(fetch.BASE_URL_ENV, state.url)
    monkeypatch.setenv("RSA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RSA_WEIGHTS_DIR", str(tmp_path / "weights"))
    yield state
    httpd.shutdown()
    httpd.server_close()


def ntu_pickle(tmp_path: Path) -> bytes:
    """A small PYSKL-style NTU60 pickle: 2 classes (A001, A002), 16 clips, the official xsub/xview splits."""
    ntu, anns = NTU60(), []
    for i, (p, c, a) in enumerate((p, c, a) for p in (1, 2, 3, 6) for c in (1, 2) for a in (1, 2)):
        name = f"S001C00{c}P00{p}R001A00{a}"
        rec = make_record(M=1 + i % 2, T=24, seed=i, frame_dir=name, label=ntu.label(name))
        anns.append({k: rec[k] for k in PYSKL_KEYS})
    split: dict[str, list[str]] = {s: [] for s in ntu.split_names}
    for ann in anns:
        for s in ntu.splits(ann["frame_dir"]):
            split[s].append(ann["frame_dir"])
    path = tmp_path / "generated" / "ntu60_hrnet.pkl"
    write_index({"split": split, "annotations": anns}, path)
    return path.read_bytes()


def torch_file() -> bytes:
    """A small file in the layout of MotionBERT's latest_epoch.bin (`model_pos` state dict)."""
    import torch

    buf = io.BytesIO()
    torch.save({"epoch": 1, "model_pos": {"module.joints_embed.weight": torch.zeros(4, 3)}}, buf)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_fetch(*args: str) -> int:
    return main(["fetch", *args])


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("error:")]


# ----------------------------------------------------------------------------- download, resume, progress


def test_fetch_records_the_digest_shows_progress_and_a_second_fetch_uses_no_network(server, tmp_path, capsys):
    data = server.files[NTU60_PATH] = ntu_pickle(tmp_path)
    out = tmp_path / "art/datasets"
    assert run_fetch("ntu60_hrnet", "--datasets-dir", str(out)) == 0
    cap = capsys.readouterr()
    dest = out / "ntu60_hrnet.pkl"
    assert cap.out.strip() == str(dest) and dest.read_bytes() == data
    assert "ntu60_hrnet.pkl" in cap.err and "100%" in cap.err  # the progress bar, total from Content-Length
    entry = json.loads((out / "manifest.json").read_text())["ntu60_hrnet.pkl"]
    assert entry == {"input": "ntu60_hrnet", "source": server.url + NTU60_PATH, "sha256": sha(data)}
    assert not list(out.glob("*.part"))
    assert server.requests == [(NTU60_PATH, None)]

    assert run_fetch("ntu60_hrnet", "--datasets-dir", str(out)) == 0
    assert len(server.requests) == 1  # verified on disk, no network


def test_cut_download_resumes_with_a_range_request(server, tmp_path, capsys):
    data = server.files[NTU60_PATH] = ntu_pickle(tmp_path)
    k = len(data) // 3
    server.cut[NTU60_PATH] = k
    out = tmp_path / "datasets"
    assert run_fetch("ntu60_hrnet", "--datasets-dir", str(out)) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert f"cannot download {server.url}{NTU60_PATH}" in line and f"after {k} of {len(data)} bytes" in line
    assert "run the same fetch again to resume" in line
    assert not (out / "ntu60_hrnet.pkl").exists()  # nothing under the final name
    assert (out / "ntu60_hrnet.pkl.part").read_bytes() == data[:k]

    assert run_fetch("ntu60_hrnet", "--datasets-dir", str(out)) == 0
    assert server.requests[-1] == (NTU60_PATH, f"bytes={k}-")
    assert (out / "ntu60_hrnet.pkl").read_bytes() == data and not (out / "ntu60_hrnet.pkl.part").exists()
    assert json.loads((out / "manifest.json").read_text())["ntu60_hrnet.pkl"]["sha256"] == sha(data)


def test_a_server_that_ignores_range_restarts_the_file_cleanly(server, tmp_path):
    data = server.files[NTU60_PATH] = ntu_pickle(tmp_path)
    server.cut[NTU60_PATH] = 1000
    server.ignore_range.add(NTU60_PATH)
    out = tmp_path / "datasets"
    assert run_fetch("ntu60_hrnet", "--datasets-dir", str(out)) == 1
    assert run_fetch("ntu60_hrnet", "--datasets-dir", str(out)) == 0
    assert server.requests[-1] == (NTU60_PATH, "bytes=1000-")  # asked, answered 200 with the whole file
    assert (out / "ntu60_hrnet.pkl").read_bytes() == data


def test_a_part_longer_than_the_file_starts_again(server, tmp_path):
    data = server.files[NTU60_PATH] = ntu_pickle(tmp_path)
    out = tmp_path / "datasets"
    out.mkdir()
    (out / "ntu60_hrnet.pkl.part").write_bytes(data + b"junk")  # the server answers 416
    assert run_fetch("ntu60_hrnet", "--datasets-dir", str(out)) == 0
    assert (out / "ntu60_hrnet.pkl").read_bytes() == data


def test_a_part_another_fetch_is_writing_is_left_alone(server, tmp_path, capsys):
    import fcntl

    server.files[NTU60_PATH] = ntu_pickle(tmp_path)
    out = tmp_path / "datasets"
    out.mkdir()
    with open(out / "ntu60_hrnet.pkl.part", "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert run_fetch("ntu60_hrnet", "--datasets-dir", str(out)) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert "another fetch is writing it" in line and (out / "ntu60_hrnet.pkl.part").exists()
    assert server.requests == []


def test_progress_redirected_to_a_log_file_writes_few_lines(server, tmp_path):
    data = server.files[NTU60_PATH] = os.urandom(256 * 1024)
    server.throttle[NTU60_PATH] = 0.02  # 64 chunks over about 1.3 s
    log = tmp_path / "log.txt"
    env = {**os.environ, fetch.BASE_URL_ENV: server.url}
    with open(log, "w") as fh:
        res = subprocess.run(
            [sys.executable, "-m", "pipeline", "fetch", "ntu60_hrnet", "--datasets-dir", str(tmp_path / "d")],
            cwd=REPO,
            stderr=fh,
            env=env,
            timeout=120,
        )
    text = log.read_text()
    assert res.returncode == 0 and (tmp_path / "d/ntu60_hrnet.pkl").read_bytes() == data
    bar = [ln for ln in text.replace("\r", "\n").splitlines() if "ntu60_hrnet.pkl" in ln and "%" in ln]
    assert "100%" in text and 1 <= len(bar) <= 3, text  # first and final draw, not one per chunk


# ----------------------------------------------------------------------------- checksums


def test_a_changed_file_is_one_error_line_and_is_never_downloaded_over(server, tmp_path, capsys):
    data = server.files[NTU60_PATH] = ntu_pickle(tmp_path)
    out = tmp_path / "datasets"
    assert run_fetch("ntu60_hrnet", "--datasets-dir", str(out)) == 0
    dest = out / "ntu60_hrnet.pkl"
    dest.write_bytes(data[:-1] + b"\0")
    capsys.readouterr()
    assert run_fetch("ntu60_hrnet", "--datasets-dir", str(out)) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    line = err[0]
    assert str(dest) in line and sha(data) in line and sha(dest.read_bytes()) in line
    assert "recorded in" in line and "manifest.json" in line and "delete it and fetch it again" in line
    assert len(server.requests) == 1 and dest.read_bytes() == data[:-1] + b"\0"


def test_a_redownload_must_match_the_recorded_digest(server, tmp_path, capsys):
    data = server.files[NTU60_PATH] = ntu_pickle(tmp_path)
    out = tmp_path / "datasets"
    assert run_fetch("ntu60_hrnet", "--datasets-dir", str(out)) == 0
    (out / "ntu60_hrnet.pkl").unlink()
    server.files[NTU60_PATH] = data + b"changed upstream"
    capsys.readouterr()
    assert run_fetch("ntu60_hrnet", "--datasets-dir", str(out)) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert "recorded in" in line and "nothing was saved" in line
    assert not (out / "ntu60_hrnet.pkl").exists() and not (out / "ntu60_hrnet.pkl.part").exists()


def test_a_publishers_digest_is_checked(server, tmp_path, capsys):
    """The NTU missing-skeleton lists carry the digests of the published files."""
    server.files["/shahroudy/NTURGB-D/master/Matlab/" + fetch._MISSING60] = b"not the published list\n"
    assert run_fetch("ntu_missing_skeletons") == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert "published for it" in line and fetch.INPUTS["ntu_missing_skeletons"].files[0].sha256 in line
    assert fetch.missing_skeletons_file("ntu60") is None


def test_missing_skeleton_lists_go_to_the_data_cache(server, tmp_path, monkeypatch):
    lists = {fetch._MISSING60: b"S001C002P005R002A008\n", fetch._MISSING120: b"S018C001P008R001A061\n"}
    files = tuple(
        dataclasses.replace(f, sha256=sha(lists[f.filename])) for f in fetch.INPUTS["ntu_missing_skeletons"].files
    )
    entry = dataclasses.replace(fetch.INPUTS["ntu_missing_skeletons"], files=files)
    monkeypatch.setitem(fetch.INPUTS, "ntu_missing_skeletons", entry)
    for name, data in lists.items():
        server.files["/shahroudy/NTURGB-D/master/Matlab/" + name] = data
    assert fetch.missing_skeletons_file("ntu60") is None
    assert run_fetch("ntu_missing_skeletons") == 0
    cache = tmp_path / "data"
    assert fetch.missing_skeletons_file("ntu60") == cache / fetch._MISSING60
    assert fetch.missing_skeletons_file("ntu120").read_bytes() == lists[fetch._MISSING120]
    assert set(json.loads((cache / "manifest.json").read_text())) == set(lists)
    with pytest.raises(KeyError, match="valid: \\['ntu120', 'ntu60'\\]"):
        fetch.missing_skeletons_file("kinetics400")
    (cache / fetch._MISSING60).write_bytes(b"edited\n")
    with pytest.raises(fetch.FetchError, match="of the published list"):
        fetch.missing_skeletons_file("ntu60")


# ----------------------------------------------------------------------------- --from, network errors


def test_from_file_imports_without_network_and_is_checked_the_same_way(server, tmp_path, capsys):
    data = ntu_pickle(tmp_path)
    src = tmp_path / "copy.pkl"
    src.write_bytes(data)
    out = tmp_path / "datasets"
    assert run_fetch("ntu60_hrnet", "--datasets-dir", str(out), "--from", str(src)) == 0
    assert (out / "ntu60_hrnet.pkl").read_bytes() == data
    entry = json.loads((out / "manifest.json").read_text())["ntu60_hrnet.pkl"]
    assert entry["sha256"] == sha(data) and entry["source"] == f"file:{src.resolve()}"
    assert run_fetch("ntu60_hrnet", "--datasets-dir", str(out)) == 0  # verified, not downloaded
    assert server.requests == []

    other = tmp_path / "other.pkl"
    other.write_bytes(data + b"x")
    capsys.readouterr()
    assert run_fetch("ntu60_hrnet", "--datasets-dir", str(out), "--from", str(other)) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert "already holds other bytes" in line and (out / "ntu60_hrnet.pkl").read_bytes() == data


def test_network_errors_are_one_line_naming_the_url(server, tmp_path, capsys, monkeypatch):
    assert run_fetch("ntu60_hrnet", "--datasets-dir", str(tmp_path)) == 1  # the server has no such file
    (line,) = error_lines(capsys.readouterr().err)
    assert line == f"error: cannot download {server.url}{NTU60_PATH}: HTTP 404 Not Found"

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(fetch.BASE_URL_ENV, f"http://127.0.0.1:{port}")
    assert run_fetch("ntu60_hrnet", "--datasets-dir", str(tmp_path)) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith(f"error: cannot download http://127.0.0.1:{port}{NTU60_PATH}: ")
    assert "refused" in err[0].lower() and not list(tmp_path.glob("*.part"))


# ----------------------------------------------------------------------------- weights through the same downloader


def test_motionbert_weights_checked_against_hugging_faces_linked_etag(server, tmp_path):
    from pose_extraction import weights

    data = torch_file()
    server.files["/cdn/latest_epoch.bin"] = data
    server.redirect[MB_PATH] = ("/cdn/latest_epoch.bin", "0" * 64)  # a digest that is not the file's
    with pytest.raises(weights.WeightsError, match="X-Linked-Etag"):
        weights.fetch("motionbert")
    assert not list((tmp_path / "weights").glob("motionbert-*"))

    server.redirect[MB_PATH] = ("/cdn/latest_epoch.bin", sha(data))
    (path,) = weights.fetch("motionbert")
    assert path.name == "motionbert-MB_release-latest_epoch.bin" and path.read_bytes() == data
    assert weights.resolve("motionbert") == path == weights.resolve("motionbert", "backbone")
    n = len(server.requests)
    assert weights.fetch("motionbert") == [path] and len(server.requests) == n  # cached and verified

    path.write_bytes(data + b"x")
    with pytest.raises(weights.WeightsError, match="recorded in .*manifest.json"):
        weights.fetch("motionbert")


def test_weights_import_takes_the_cache_name_and_is_checked(server, tmp_path):
    from pose_extraction import weights

    src = tmp_path / "latest_epoch.bin"  # MotionBERT's published (generic) name
    src.write_bytes(torch_file())
    path = weights.import_file("motionbert", src)  # the CLI's default role "estimator" means "backbone"
    assert path.name == "motionbert-MB_release-latest_epoch.bin" and weights.resolve("motionbert") == path
    src.write_bytes(torch_file() + b"x")
    with pytest.raises(weights.WeightsError, match="already holds other bytes"):
        weights.import_file("motionbert", src)
    assert server.requests == []


def test_an_estimator_file_must_match_the_prefix_in_its_name(server, tmp_path):
    from pose_extraction import weights

    (wf, _) = weights.OFFICIAL["hrnet"]
    server.files["/mmpose/top_down/hrnet/" + wf.filename] = b"not the published checkpoint"
    with pytest.raises(weights.WeightsError, match="does not match c78dce93 published in its file name"):
        weights.fetch("hrnet")
    assert not list((tmp_path / "weights").glob("hrnet*"))  # neither the file nor its part


# ----------------------------------------------------------------------------- Make, end to end


def make_env(server: Server, tmp_path: Path) -> dict:
    return {
        fetch.BASE_URL_ENV: server.url,
        "RSA_DATA_DIR": str(tmp_path / "data"),
        "RSA_WEIGHTS_DIR": str(tmp_path / "weights"),
    }


def test_make_weights_model_motionbert(server, tmp_path, monkeypatch):
    for k, v in make_env(server, tmp_path).items():
        monkeypatch.setenv(k, v)
    data = server.files[MB_PATH] = torch_file()
    res = make("weights", "MODEL=motionbert")
    assert res.returncode == 0, res.stderr[-3000:]
    path = tmp_path / "weights/motionbert-MB_release-latest_epoch.bin"
    assert res.stdout.strip().splitlines()[-1] == str(path) and path.read_bytes() == data
    manifest = json.loads((tmp_path / "weights/manifest.json").read_text())
    assert manifest["motionbert"]["backbone"]["sha256"] == sha(data)
    for args, want in ((["ESTIMATOR=hrnet"], "weights hrnet"), ([], "weights vitpose")):  # as before
        res = make("-n", "weights", *args)
        assert res.returncode == 0 and f"-m pose_extraction {want} " in res.stdout + " "


def test_make_fetch_then_train_one_epoch_on_the_fetched_pickle(server, tmp_path, monkeypatch):
    for k, v in make_env(server, tmp_path).items():
        monkeypatch.setenv(k, v)
    data = server.files[NTU60_PATH] = ntu_pickle(tmp_path)
    art = tmp_path / "art"
    res = make(f"ART={art}", "fetch", "DATASET=ntu60_hrnet")
    assert res.returncode == 0, res.stderr[-3000:]
    pkl = art / "datasets/ntu60_hrnet.pkl"
    assert pkl.read_bytes() == data and str(pkl) in res.stdout and "100%" in res.stderr
    store = subprocess.run([sys.executable, "-m", "pipeline", "pack", "--help"], cwd=REPO, capture_output=True)
    assert (art / "datasets/ntu60_hrnet.store").exists() == (store.returncode == 0)
    res = make(f"ART={art}", "fetch", "DATASET=ntu60_hrnet")
    assert res.returncode == 0 and len(server.requests) == 1  # verified, no network
    res = make(f"ART={art}", "fetch")
    assert res.returncode != 0 and "make fetch: set DATASET=" in res.stderr

    config = tmp_path / "tiny.yaml"
    config.write_text(
        "seed: 0\nmodel:\n  preset: tiny\n  hidden_dim: 32\n  maxlen: 16\ndata:\n  clip_len: 16\n"
        "optim:\n  epochs: 1\n  batch_size: 4\n  lr_backbone: 1.0e-3\n  lr_head: 1.0e-3\n"
    )
    run = tmp_path / "run"
    argv = ["train", "--config", str(config), "--data", str(pkl), "--split", "xsub", "--out", str(run)]
    res = subprocess.run(
        [str(REPO / ".venv/bin/python"), "-m", "recognition", *argv, "--device", "cpu"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (run / "best.pt").is_file()
