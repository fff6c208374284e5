//! The README's quick-start code is `examples/readme.rs`, verbatim, so the
//! code users copy is the code CI builds.

#[test]
fn the_readme_quick_start_is_examples_readme_rs_verbatim() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let example =
        std::fs::read_to_string(format!("{root}/examples/readme.rs")).expect("examples/readme.rs");
    let marker = "<!-- examples/readme.rs, verbatim; CI builds it -->\n```rust\n";
    let start = readme
        .find(marker)
        .expect("the quick-start marker in README.md")
        + marker.len();
    let end = start
        + readme[start..]
            .find("\n```")
            .expect("the end of the code block");
    assert_eq!(
        &readme[start..end],
        example.trim_end(),
        "README.md and examples/readme.rs differ"
    );
}
