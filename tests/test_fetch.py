"""Released files on demand (titok/fetch.py, titok/released.py), through the real download code against a server
on the loopback interface: plain URLs (hash-checked, atomic), hub files through huggingface_hub, and offline."""

from __future__ import annotations

import hashlib
import http.server
import threading

import pytest
import torch

import titok
from bench.cli import main as cli_main
from titok import released
from titok.errors import ConfigError, MissingFileError
from titok.fetch import DownloadError, HubFile, UrlFile, cache_dir, fetch, hf_cache_dir

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: several read chunks


class LoopbackServer:
    """Serves `files` {url path: bytes}; `/cut/<path>` announces the whole length and closes half-way; hub routes
    `/{repo}/resolve/{revision}/{file}` answer HEAD and GET with the headers huggingface_hub requires
    (X-Repo-Commit, ETag, Content-Length) and a 404 with X-Error-Code: EntryNotFound for other names."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = files, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _answer(self, with_body: bool):
                outer.requests.append((self.command, self.path))
                path, cut = self.path, self.path.startswith("/cut/")
                if cut:
                    path = path[len("/cut"):]
                body = outer.files.get(path)
                if body is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"' + hashlib.sha256(body).hexdigest() + '"')
                self.send_header("X-Repo-Commit", COMMIT)
                self.end_headers()
                if with_body:
                    self.wfile.write(body[: len(body) // 2] if cut else body)
                    self.wfile.flush()
                    if cut:
                        self.close_connection = True

            def do_HEAD(self):
                self._answer(False)

            def do_GET(self):
                self._answer(True)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Every cache folder under tmp_path, online by default."""
    for var in ("HF_HUB_CACHE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # set, so that the value `--offline` writes is undone after the test
    monkeypatch.setenv("TITOK_CACHE", str(tmp_path / "titok-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return tmp_path


def cache_files():
    return sorted(p.name for p in cache_dir().rglob("*") if p.is_file()) if cache_dir().exists() else []


# ---------------------------------------------------------------------------------------------------- URLs
def test_url_download_is_hash_checked_and_cached(caches):
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    with LoopbackServer({"/w/model.ckpt": PAYLOAD}) as srv:
        path = fetch(UrlFile(srv.url + "/w/model.ckpt", sha256=digest[:8]))
        assert path == cache_dir() / "model.ckpt" and path.read_bytes() == PAYLOAD
        assert fetch(UrlFile(srv.url + "/w/model.ckpt", sha256=digest)) == path  # full digest also accepted
        assert len(srv.requests) == 1  # the second call found the cached file
    assert cache_files() == ["model.ckpt"]  # no temporary file left beside it


def test_url_hash_mismatch_is_an_error_and_caches_nothing(caches):
    with LoopbackServer({"/w/model.ckpt": PAYLOAD}) as srv:
        with pytest.raises(DownloadError, match="does not match the published deadbeef"):
            fetch(UrlFile(srv.url + "/w/model.ckpt", sha256="deadbeef"))
    assert cache_files() == []


def test_interrupted_download_never_leaves_a_usable_file(caches):
    with LoopbackServer({"/w/model.ckpt": PAYLOAD}) as srv:
        with pytest.raises(DownloadError, match="nothing was cached"):
            fetch(UrlFile(srv.url + "/cut/w/model.ckpt", filename="model.ckpt"))  # no hash: the length must hold
        assert cache_files() == []
        # The next attempt starts afresh and succeeds; the half file never stood under the final name.
        assert fetch(UrlFile(srv.url + "/w/model.ckpt")).read_bytes() == PAYLOAD


def test_http_error_is_a_download_error(caches):
    with LoopbackServer({}) as srv, pytest.raises(DownloadError, match="404"):
        fetch(UrlFile(srv.url + "/w/missing.ckpt"))
    assert cache_files() == []


def test_offline_url_never_connects_and_says_where_to_put_it(caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with LoopbackServer({"/w/model.ckpt": PAYLOAD}) as srv:
        with pytest.raises(MissingFileError) as e:
            fetch(UrlFile(srv.url + "/w/model.ckpt", sha256="abcdef12"))
        assert srv.requests == []
    msg = str(e.value)
    assert "/w/model.ckpt" in msg and str(cache_dir() / "model.ckpt") in msg and "abcdef12" in msg
    (cache_dir() / "model.ckpt").parent.mkdir(parents=True)
    (cache_dir() / "model.ckpt").write_bytes(PAYLOAD)  # the user follows the message: now it is found offline
    assert fetch(UrlFile("http://127.0.0.1:9/w/model.ckpt")).read_bytes() == PAYLOAD


def test_cached_file_with_a_wrong_hash_is_refused(caches):
    (cache_dir()).mkdir(parents=True)
    (cache_dir() / "model.ckpt").write_bytes(b"not it")
    with pytest.raises(DownloadError, match="is not the file published"):
        fetch(UrlFile("http://127.0.0.1:9/w/model.ckpt", sha256="abcdef12"), offline=True)


# ------------------------------------------------------------------------------------------------------ hub
def test_hub_file_through_huggingface_hub_then_offline_from_its_cache(caches, monkeypatch):
    with LoopbackServer({f"/org/repo/resolve/main/{name}": PAYLOAD for name in ("model.bin",)}) as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.url)
        source = HubFile("org/repo", ("model.safetensors", "model.bin"))  # the first name is absent: next one
        path = fetch(source)
        assert path.read_bytes() == PAYLOAD and hf_cache_dir() in path.parents
        assert ("GET", "/org/repo/resolve/main/model.bin") in srv.requests
        seen = len(srv.requests)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert fetch(source).read_bytes() == PAYLOAD  # from huggingface_hub's cache
        assert len(srv.requests) == seen  # offline: not one request


def test_hub_offline_without_cache_names_the_file_and_the_place(caches, monkeypatch):
    with LoopbackServer({"/org/repo/resolve/main/model.bin": PAYLOAD}) as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(MissingFileError) as e:
            fetch(HubFile("org/repo", ("model.bin",)))
        assert srv.requests == []
    where = cache_dir() / "hub" / "org/repo" / "model.bin"
    assert "org/repo/resolve/main/model.bin" in str(e.value) and str(where) in str(e.value)
    where.parent.mkdir(parents=True)
    where.write_bytes(PAYLOAD)
    assert fetch(HubFile("org/repo", ("model.bin",))) == where


def test_hub_repo_without_any_of_the_names(caches, monkeypatch):
    with LoopbackServer({}) as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.url)
        with pytest.raises(DownloadError, match="none of the file names"):
            fetch(HubFile("org/repo", ("model.safetensors", "pytorch_model.bin")))


# ------------------------------------------------------------------------------------------ weights="released"
def test_released_sources_cover_the_release():
    hub = {k: s for k, s in released.SOURCES.items() if isinstance(s, HubFile)}
    assert hub[("tokenizer", "titok_l32")].repo_id == "yucornetto/tokenizer_titok_l32_imagenet"
    assert hub[("generator", "titok_s128")].repo_id == "yucornetto/generator_titok_s128_imagenet"
    assert hub[("tokenizer", "maskgit_vqgan_f16_1024")].filenames == ("maskgit-vqgan-imagenet-f16-256.bin",)
    assert released.SOURCES[("generator", "maskgit_512")].name == "maskgit_imagenet512.ckpt"
    for kind, name in released.SOURCES:
        if name.startswith("titok_"):
            titok.get_spec(kind, name)  # every TiTok entry names a registered preset


def test_preset_without_a_source_says_which_have_one():
    with pytest.raises(ConfigError, match="no published checkpoint.*titok_l32"):
        titok.load_tokenizer("titok_tiny_vq", weights="released")


def test_load_released_tokenizer_and_cli_through_the_hub(caches, monkeypatch, tmp_path):
    """weights="released" end to end: fetched through huggingface_hub from the loopback hub, loaded, recorded."""
    torch.manual_seed(1)
    model = titok.load_tokenizer("titok_tiny_vq")
    titok.save_checkpoint(model, tmp_path / "model.safetensors", "tokenizer")
    blob = (tmp_path / "model.safetensors").read_bytes()
    monkeypatch.setitem(released.SOURCES, ("tokenizer", "titok_tiny_vq"),
                        HubFile("test/tiny", ("model.safetensors", "pytorch_model.bin")))
    with LoopbackServer({"/test/tiny/resolve/main/model.safetensors": blob}) as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.url)
        loaded = titok.load_tokenizer("titok_tiny_vq", weights="released")
        for k, v in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k
        seen = len(srv.requests)
        rc = cli_main(["reconstruct", "--model", "titok_tiny_vq", "--weights", "released", "--offline",
                       "--input", "builtin:procedural", "--limit", "2", "--out", str(tmp_path / "recon")])
        assert rc == 0 and len(srv.requests) == seen  # --offline: served from the cache, no request
    assert len(list((tmp_path / "recon").glob("*.png"))) == 2


def test_cli_offline_missing_released_weights_is_exit_2(caches, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(released.SOURCES, ("tokenizer", "titok_tiny_vq"), HubFile("test/tiny", ("model.bin",)))
    rc = cli_main(["reconstruct", "--model", "titok_tiny_vq", "--weights", "released", "--offline",
                   "--input", "builtin:procedural", "--limit", "1", "--out", str(tmp_path / "recon")])
    err = capsys.readouterr().err
    assert rc == 2 and "offline" in err and str(cache_dir() / "hub" / "test/tiny" / "model.bin") in err


# ------------------------------------------------------------------------------------- suites, Inception
SUITE = """
[suite]
name = "t"
[defaults]
iters = 1
[[run]]
task = "speed"
models = ["titok_tiny_vq"]
[run.weights.tokenizer]
titok_tiny_vq = "released"
"""


def test_suite_with_released_weights_offline_names_missing_files_before_work(caches, monkeypatch, tmp_path):
    from bench.metrics.inception import MissingArtifactError
    from bench.run.suite import check_paths, load_suite

    (tmp_path / "s.toml").write_text(SUITE)
    suite = load_suite(str(tmp_path / "s.toml"))
    with pytest.raises(ConfigError, match="no published checkpoint"):  # judged before any work, not mid-run
        check_paths(suite)
    monkeypatch.setitem(released.SOURCES, ("tokenizer", "titok_tiny_vq"), HubFile("test/tiny", ("model.bin",)))
    check_paths(suite)  # online: fetched when loaded
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingArtifactError) as e:
        check_paths(suite)
    assert "tokenizer weights for titok_tiny_vq" in str(e.value)
    assert str(cache_dir() / "hub" / "test/tiny" / "model.bin") in str(e.value)


def test_inception_released_is_fetched_hash_checked(caches, monkeypatch):
    """--inception-weights released: torch-fidelity's file through the hash-checked download (served locally)."""
    import bench.metrics.inception as inception

    blob = b"inception weights stand-in bytes"
    digest = hashlib.sha256(blob).hexdigest()
    with LoopbackServer({"/v0.2.0/" + inception.INCEPTION_FILE: blob}) as srv:
        monkeypatch.setattr(inception, "INCEPTION_SOURCE", UrlFile(srv.url + "/v0.2.0/" + inception.INCEPTION_FILE,
                                                                   sha256="00000000"))
        with pytest.raises(DownloadError, match="does not match"):
            inception.resolve_inception_weights("released")
        assert cache_files() == []
        monkeypatch.setattr(inception, "INCEPTION_SOURCE", UrlFile(srv.url + "/v0.2.0/" + inception.INCEPTION_FILE,
                                                                   sha256=digest[:8]))
        path = inception.resolve_inception_weights("released")
    assert path == cache_dir() / inception.INCEPTION_FILE
    assert inception.resolve_inception_weights(None) == path  # later runs find it in the cache with no flag


def test_inception_released_offline_says_where(caches, monkeypatch):
    from bench.metrics.inception import INCEPTION_FILE, resolve_inception_weights

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingFileError) as e:
        resolve_inception_weights("released")
    assert "torch-fidelity/releases" in str(e.value) and str(cache_dir() / INCEPTION_FILE) in str(e.value)


def test_generate_released_pairs_the_released_tokenizer(caches, monkeypatch, tmp_path):
    import json

    torch.manual_seed(2)
    files = {}
    for kind, name in (("generator", "titok_tiny_bert"), ("tokenizer", "titok_tiny_2stage")):
        model = titok.load_generator(name) if kind == "generator" else titok.load_tokenizer(name)
        titok.save_checkpoint(model, tmp_path / f"{name}.safetensors", kind)
        files[f"/test/{name}/resolve/main/model.safetensors"] = (tmp_path / f"{name}.safetensors").read_bytes()
        monkeypatch.setitem(released.SOURCES, (kind, name), HubFile(f"test/{name}", ("model.safetensors",)))
    with LoopbackServer(files) as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.url)
        assert cli_main(["generate", "--model", "titok_tiny_bert", "--weights", "released", "--num", "2",
                         "--batch-size", "2", "--out", str(tmp_path / "samples")]) == 0
    weights = json.loads((tmp_path / "samples" / "generation.json").read_text())["weights"]
    assert set(weights) == {"generator", "tokenizer"}
    assert all(tag.startswith("model.safetensors@") for tag in weights.values())  # neither ran with random weights


def test_every_published_source_names_a_registered_preset():
    """A source keyed by a preset name nobody registers could never be asked for (a typo, a renamed preset)."""
    from titok.registry import get_spec
    from titok.released import SOURCES

    for kind, preset in SOURCES:
        assert get_spec(kind, preset).name == preset
