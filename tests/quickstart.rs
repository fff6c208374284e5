//! The README's quick start works for a new user: a crate made outside this
//! source tree, with exactly the README's `[dependencies]` block (the
//! `winddown` line pointed at this checkout) and the README's quick-start
//! code as its `main.rs`, builds offline and runs to completion.
//!
//! Inside this crate the quick start always compiles, because every
//! dev-dependency is in scope; only a separate crate sees what a user sees.
//! The scratch crate's target directory is kept under this crate's `target/`
//! so that reruns are incremental (≈ 1–3 s once built).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The marker that opens the quick-start program in README.md.
const CODE_MARKER: &str = "<!-- examples/readme.rs, verbatim; CI builds it -->\n```rust\n";

fn readme() -> String {
    fs::read_to_string(Path::new(ROOT).join("README.md")).expect("read README.md")
}

/// The body of the first fenced block that starts at or after `from` and
/// whose opening fence is `fence` (e.g. "```toml\n").
fn block_after<'a>(text: &'a str, from: usize, fence: &str) -> &'a str {
    let start = from
        + text[from..]
            .find(fence)
            .unwrap_or_else(|| panic!("a {fence:?} block in README.md"))
        + fence.len();
    let len = text[start..]
        .find("\n```")
        .expect("the end of the code block");
    &text[start..start + len + 1]
}

/// The `[dependencies]` block of the README's quick start.
fn readme_dependencies(readme: &str) -> &str {
    let section = readme
        .find("\n## Quick start")
        .expect("a \"## Quick start\" section in README.md");
    let block = block_after(readme, section, "```toml\n");
    assert!(
        block.starts_with("[dependencies]\n"),
        "the quick start's toml block is a [dependencies] block: {block:?}"
    );
    block
}

/// The quick-start program.
fn readme_program(readme: &str) -> &str {
    let at = readme
        .find(CODE_MARKER)
        .expect("the quick-start marker in README.md");
    block_after(readme, at, "```rust\n")
}

/// Rewrites the `winddown = …` line to a path dependency on this checkout,
/// keeping whatever else it says (features, `default-features`).
fn point_at_this_checkout(deps: &str) -> String {
    let path = toml_string(ROOT);
    let mut found = false;
    let lines: Vec<String> = deps
        .lines()
        .map(|line| {
            let Some(value) = line.strip_prefix("winddown").map(str::trim_start) else {
                return line.to_owned();
            };
            let Some(value) = value.strip_prefix('=').map(str::trim) else {
                return line.to_owned();
            };
            found = true;
            if value.starts_with('"') {
                // `winddown = "0.1"`
                format!("winddown = {{ path = {path} }}")
            } else if let Some(table) = value.strip_prefix('{') {
                // `winddown = { version = "0.1", features = [...] }`: the
                // version key goes, the path key comes first.
                let rest: Vec<&str> = table
                    .trim_end_matches('}')
                    .split(',')
                    .map(str::trim)
                    .filter(|kv| !kv.is_empty() && !kv.starts_with("version"))
                    .collect();
                let mut keys = vec![format!("path = {path}")];
                keys.extend(rest.iter().map(|kv| (*kv).to_owned()));
                format!("winddown = {{ {} }}", keys.join(", "))
            } else {
                panic!("a winddown line this test can rewrite: {line:?}")
            }
        })
        .collect();
    assert!(
        found,
        "the README's [dependencies] lists winddown: {deps:?}"
    );
    lines.join("\n") + "\n"
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Where the scratch crate builds: under this crate's `target/`, the same
/// directory on every run, so only what changed is rebuilt.
fn scratch_target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quickstart-target")
}

fn cargo() -> Command {
    // The cargo that runs this test, else the one on PATH.
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `cmd` to completion, failing the test if it takes longer than
/// `within` (a "does not hang" bound, far above the normal time).
fn output_within(mut cmd: Command, within: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut err = Vec::new();
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            out
        });
        let _ = stderr.read_to_end(&mut err);
        let out = reader.join().unwrap_or_default();
        let status = child.wait().expect("wait");
        let _ = tx.send(Output {
            status,
            stdout: out,
            stderr: err,
        });
    });
    match rx.recv_timeout(within) {
        Ok(output) => output,
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{cmd:?} did not finish within {within:?}");
        }
    }
}

#[test]
fn the_readme_quick_start_builds_and_runs_in_a_new_crate_with_the_readme_dependencies() {
    let readme = readme();
    let deps = point_at_this_checkout(readme_dependencies(&readme));
    let program = readme_program(&readme);

    // Outside the source tree, so no parent manifest or workspace applies.
    let dir = tempfile::Builder::new()
        .prefix("winddown-quickstart-")
        .tempdir()
        .expect("tempdir");
    assert!(!dir.path().starts_with(ROOT));
    fs::create_dir(dir.path().join("src")).expect("mkdir src");
    let manifest = format!(
        "[package]\nname = \"quickstart\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         # An empty workspace: this crate stands alone.\n[workspace]\n\n{deps}"
    );
    fs::write(dir.path().join("Cargo.toml"), &manifest).expect("write Cargo.toml");
    fs::write(dir.path().join("src/main.rs"), program).expect("write main.rs");

    let target = scratch_target_dir();
    let mut build = cargo();
    build
        .args(["build", "--offline", "--quiet", "--target-dir"])
        .arg(&target)
        .current_dir(dir.path())
        // The scratch crate's own settings, not this test's.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR");
    let built = output_within(build, Duration::from_secs(600));
    assert!(
        built.status.success(),
        "the quick start does not build in a new crate.\n--- Cargo.toml\n{manifest}\n--- cargo\n{}",
        String::from_utf8_lossy(&built.stderr)
    );

    // The quick start completes by itself: 200 jobs of 10 ms on 4 workers,
    // then the release hook, then exit code 0.
    let exe = target
        .join("debug")
        .join(format!("quickstart{}", std::env::consts::EXE_SUFFIX));
    let ran = output_within(Command::new(&exe), Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&ran.stdout);
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert_eq!(
        ran.status.code(),
        Some(0),
        "the quick start's exit\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    let squares = stdout.lines().filter(|l| l.contains("² = ")).count();
    assert_eq!(squares, 200, "every job ran once\n{stdout}");
    assert_eq!(
        stdout.lines().last(),
        Some("database closed"),
        "the release hook runs last\n{stdout}"
    );
    assert!(
        stderr.contains("completed"),
        "the report is printed: {stderr}"
    );
}

#[test]
fn the_winddown_line_is_rewritten_to_this_checkout_keeping_its_other_keys() {
    let path = toml_string(ROOT);
    assert_eq!(
        point_at_this_checkout("[dependencies]\nwinddown = \"0.1\"\nanyhow = \"1\"\n"),
        format!("[dependencies]\nwinddown = {{ path = {path} }}\nanyhow = \"1\"\n")
    );
    assert_eq!(
        point_at_this_checkout(
            "[dependencies]\nwinddown = { version = \"0.1\", features = [\"serde\"] }\n"
        ),
        format!("[dependencies]\nwinddown = {{ path = {path}, features = [\"serde\"] }}\n")
    );
}
