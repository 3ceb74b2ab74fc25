//! Runs the Python/pika integration suite in `tests/pika/` against the real `warren` binary.
//!
//! pika is the client the RabbitMQ tutorials use, so these tests check that Warren behaves
//! the way those tutorials (and RabbitMQ) promise. The suite is plain pytest; this file only
//! (1) makes sure a virtualenv with pika and pytest exists at `target/pika-venv`,
//! (2) runs pytest with `WARREN_BIN` pointing at the freshly built broker, streaming its output,
//! (3) fails unless pytest exits 0 (its "no tests collected" code 5 is a failure too).
//!
//! Set `WARREN_TEST_PORT=<port>` to run the suite against an already running broker on
//! 127.0.0.1 (e.g. RabbitMQ on 5672) instead of starting `warren`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// True when `python` exists and can import pika and pytest.
fn venv_ready(python: &Path) -> bool {
    python.exists()
        && Command::new(python)
            .args(["-c", "import pika, pytest"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
}

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
}

/// Creates `target/pika-venv` with pika 1.3 and pytest unless it already works, and returns
/// its python. An exclusive lock on `target/pika-venv.lock` keeps concurrent test binaries
/// (or concurrent `cargo test` runs) from building the venv at the same time; the OS drops
/// the lock if the process dies, so there is no stale lock to clean up.
fn ensure_venv() -> PathBuf {
    let target = manifest_dir().join("target");
    fs::create_dir_all(&target).expect("create target/");
    let venv = target.join("pika-venv");
    let python = venv.join("bin").join("python");

    let lock = File::create(target.join("pika-venv.lock")).expect("create venv lock file");
    lock.lock().expect("lock target/pika-venv.lock");

    if !venv_ready(&python) {
        if !python.exists() {
            run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        }
        run(Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
            "pika==1.3.*",
            "pytest",
        ]));
        assert!(
            venv_ready(&python),
            "{} cannot import pika and pytest after pip install",
            python.display()
        );
    }
    drop(lock);
    python
}

#[test]
fn pika_suite() {
    let python = ensure_venv();
    let root = manifest_dir();
    // stdout/stderr are inherited, so pytest's progress streams straight to the terminal.
    let status = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "tests/pika",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
        ])
        .current_dir(&root)
        .env("WARREN_BIN", env!("CARGO_BIN_EXE_warren"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .status()
        .expect("run pytest");
    // Any non-zero code fails, including 5 ("no tests were collected").
    assert_eq!(
        status.code(),
        Some(0),
        "pika suite failed (pytest exit status {status}; 5 means no tests were collected)"
    );
}
