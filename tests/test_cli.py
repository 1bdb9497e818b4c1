"""The command line: files saved, catalogue listed, and every expected failure one line with the right exit code."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import respx
from PIL import Image

from bot.cli import main
from bot.config import Settings
from tests.conftest import SETTING_NAMES

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("clean_env")


def png_file(path: Path, size: tuple[int, int] = (256, 256), mode: str = "RGB") -> Path:
    Image.new(mode, size, (10, 120, 200)).save(path, "PNG")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_imagine_with_mock_saves_named_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """imagine --provider mock writes EASEL-<stamp>_<i>.png files of the asked size and prints them."""
    code, out, err = run(
        capsys, "--provider", "mock", "imagine", "a red fox", "--n", "2", "--size", "1536x1024", "--out", "pics"
    )
    assert (code, err) == (0, "")
    files = sorted((tmp_path / "pics").iterdir())
    assert [f.name.rsplit("_", 1)[-1] for f in files] == ["1.png", "2.png"]
    assert all(f.name.startswith("EASEL-") for f in files)
    with Image.open(files[0]) as image:
        assert image.size == (1536, 1024)
    assert str(files[0].relative_to(tmp_path)) in out
    assert "mock" in out
    assert "$0" in out


def test_imagine_format_and_revised_prompt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--format jpeg gives .jpeg files."""
    code, out, _ = run(capsys, "--provider", "mock", "imagine", "a red fox", "--format", "jpeg")
    assert code == 0
    assert len(list(tmp_path.glob("EASEL-*_1.jpeg"))) == 1
    assert "revised prompt:" in out


def test_edit_and_vary_with_mock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """edit and vary read the image file and save results."""
    source = png_file(tmp_path / "in.png")
    mask = tmp_path / "mask.png"
    with Image.new("RGBA", (256, 256), (0, 0, 0, 255)) as drawn:
        drawn.paste((0, 0, 0, 0), (64, 64, 192, 192))
        drawn.save(mask)
    code, out, err = run(capsys, "--provider", "mock", "edit", "add a hat", "--image", str(source), "--mask", str(mask))
    assert (code, err) == (0, "")
    code, out, err = run(
        capsys, "--provider", "mock", "vary", "--image", str(source), "--n", "2", "--strength", "strong"
    )
    assert (code, err) == (0, "")
    assert "variation: through edit (strong)" in out
    assert len(list(tmp_path.glob("EASEL-*.png"))) == 3


def test_models_lists_status_and_prices(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """models shows active models with prices; --all adds shut-down ones with their replacement."""
    monkeypatch.setattr("bot.cli.utc_today", lambda: dt.date(2026, 11, 20))
    code, out, _ = run(capsys, "models")
    assert code == 0
    assert "gpt-image-2 " in out
    assert "default" in out
    assert "dall-e-3" not in out
    assert "deprecated, shuts down 2026-12-01" in out
    code, out, _ = run(capsys, "models", "--all")
    assert "shut down 2026-05-12 (use gpt-image-2)" in out


def test_models_drops_a_model_on_its_shutdown_day(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """From 2026-12-01 gpt-image-1.5 is hidden, and --all lists it as shut down with its replacement."""
    monkeypatch.setattr("bot.cli.utc_today", lambda: dt.date(2026, 12, 1))
    code, out, _ = run(capsys, "models")
    assert code == 0
    assert "gpt-image-1.5" not in out
    assert "gpt-image-2 " in out
    code, out, _ = run(capsys, "models", "--all")
    assert "shut down 2026-12-01 (use gpt-image-2)" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--provider", "mock", "imagine", "a cat", "--model", "dall-e-2", "--size", "255x255"],
            "error: size 255x255 is not allowed for dall-e-2: use 256x256, 512x512 or 1024x1024.",
        ),
        (
            ["--provider", "mock", "imagine", "a cat", "--style", "vivid"],
            "error: gpt-image-2 takes no style; dall-e-3 does.",
        ),
        (["--provider", "mock", "imagine", "   "], "error: The prompt is empty: describe the image you want."),
        (["--provider", "mock", "imagine", "a cat", "--model", "nope"], "error: There is no model called 'nope'"),
        (["--provider", "mock", "vary", "--image", "missing.png"], "error: There is no file missing.png."),
        (["imagine", "a cat"], "error: OPENAI_API_KEY is not set"),
        (
            ["--provider", "mock", "imagine"],
            "error: python -m bot imagine: the following arguments are required: prompt",
        ),
        (["--provider", "mock", "imagine", "x", "--n", "0"], "error: --n must be between 1 and 10."),
        (["--provider", "mock", "imagine", "a \udcff fox"], "error: The prompt is not valid UTF-8 text"),
        (["--provider", "mock", "vary", "--image", "/dev/zero"], "error: /dev/zero is over 64 MB"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    """Bad input: one line on stderr, exit code 2, nothing saved."""
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith(expected)
    assert "Traceback" not in err


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out naming a file: one line, exit 2, and no job made (so nothing paid for and lost)."""
    (tmp_path / "fox.png").write_bytes(b"not a folder")
    code, _, err = run(capsys, "--provider", "mock", "imagine", "a fox", "--out", "fox.png")
    assert (code, err) == (2, "error: --out fox.png is a file, not a folder.\n")
    assert (
        not (tmp_path / "data" / "easel.db").exists()
        or not sqlite3.connect(tmp_path / "data" / "easel.db").execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    )


def test_not_an_image_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A text file given as image: one friendly line."""
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = run(capsys, "--provider", "mock", "vary", "--image", "notes.txt")
    assert code == 2
    assert err == (
        "error: The image is not an image Easel can read: upload a PNG, JPEG, WEBP, GIF, BMP, TIFF or HEIC file.\n"
    )


@respx.mock(assert_all_called=True)
def test_provider_failure_is_exit_1_and_hides_the_key(
    respx_mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 401 from OpenAI: exit 1, one line, the key never echoed."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-fake-12345678")
    respx_mock.post("https://api.openai.com/v1/images/generations").mock(
        return_value=httpx.Response(
            401,
            json={
                "error": {
                    "message": "Incorrect API key provided: sk-live-fake-12345678",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            },
        )
    )
    code, _, err = run(capsys, "imagine", "a cat")
    assert code == 1
    assert len(err.splitlines()) == 1
    assert "sk-live" not in err
    assert "API key" in err


def test_no_command_checks_the_bot_settings(capsys: pytest.CaptureFixture[str]) -> None:
    """python -m bot alone checks the token and key, one line per missing variable."""
    code, _, err = run(capsys)
    assert code == 2
    assert err.splitlines() == [
        "error: DISCORD_TOKEN is not set: create a bot at https://discord.com/developers and copy its token",
        "error: OPENAI_API_KEY is not set: the openai provider needs an API key (or set EASEL_PROVIDER=mock)",
    ]


def test_no_command_starts_the_bot(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """With good settings and no command, the bot starter gets the settings."""
    monkeypatch.setenv("DISCORD_TOKEN", "token-for-tests")
    started: list[Settings] = []
    code = main(["--provider", "mock"], start_bot=lambda settings: started.append(settings) or 0)
    assert code == 0
    assert started[0].provider == "mock"


def test_rejected_token_is_one_line(tmp_path: Path) -> None:
    """`python -m bot` with a token Discord refuses: one line, exit 2 (against a loopback fake of Discord)."""
    import http.server
    import threading

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"message": "401: Unauthorized", "code": 0}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
        env.update(
            PYTHONPATH=str(ROOT),
            DISCORD_TOKEN="not-a-real-token",
            EASEL_PROVIDER="mock",
            DISCORD_API_BASE=f"http://127.0.0.1:{server.server_address[1]}/api/v10",
        )
        done = subprocess.run(
            [sys.executable, "-m", "bot"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: DISCORD_TOKEN was refused by Discord: copy the bot's token again from the developer portal"
    )
    assert "Traceback" not in done.stderr
    assert "not-a-real-token" not in done.stderr


def test_real_process_prints_no_traceback(tmp_path: Path) -> None:
    """`python -m bot` as a subprocess: an expected error is one stderr line, exit 2."""
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "bot", "--provider", "mock", "imagine", "x", "--quality", "ultra"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == "error: quality 'ultra' is not offered by gpt-image-2: use auto, low, medium or high.\n"
    assert done.stdout == ""


def test_help_exits_cleanly() -> None:
    """--help is not an error."""
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0


def test_edit_region_preview_costs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--preview-mask writes the tinted picture and makes no job."""
    source = png_file(tmp_path / "in.png", size=(400, 300))
    code, out, err = run(
        capsys,
        "--provider",
        "mock",
        "edit",
        "a hat",
        "--image",
        str(source),
        "--region",
        "center",
        "--preview-mask",
        "p.jpg",
    )
    assert (code, err) == (0, "")
    assert "25% of the image" in out
    with Image.open(tmp_path / "p.jpg") as picture:
        assert picture.size == (400, 300)
    assert not list(tmp_path.glob("EASEL-*"))


def test_edit_with_region_and_square_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A landscape JPEG edited on dall-e-2 is padded to a square, and the notes say so."""
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (1600, 1200), (90, 60, 30)).save(photo, "JPEG")
    code, out, err = run(
        capsys, "--provider", "mock", "edit", "a hat", "--image", str(photo), "--model", "dall-e-2", "--region", "top"
    )
    assert (code, err) == (0, "")
    assert "note: The image was padded to a square with transparency." in out
    assert "(1024x1024 image/png)" in out


def test_bad_region_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A region off the image edge is refused with an example of the right form."""
    source = png_file(tmp_path / "in.png")
    code, _, err = run(capsys, "--provider", "mock", "edit", "x", "--image", str(source), "--region", "x=90 w=50")
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "x=10 y=20 w=50 h=40" in err


@pytest.mark.parametrize(("way", "size"), [(("--zoom", "2"), "(1024x1024"), (("--pan", "left"), "(992x672")])
def test_outpaint(tmp_path: Path, capsys: pytest.CaptureFixture[str], way: tuple[str, str], size: str) -> None:
    """outpaint zooms out or pans and saves the painted canvas."""
    source = png_file(tmp_path / "in.png", size=(512, 512))
    code, out, err = run(capsys, "--provider", "mock", "outpaint", "--image", str(source), *way)
    assert (code, err) == (0, "")
    assert size in out
    assert "note:" in out


def test_opaque_mask_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A mask with nothing transparent says so, in one line."""
    source = png_file(tmp_path / "in.png")
    mask = png_file(tmp_path / "mask.png", mode="RGBA")
    code, _, err = run(capsys, "--provider", "mock", "edit", "x", "--image", str(source), "--mask", str(mask))
    assert code == 2
    assert "no transparent area" in err
