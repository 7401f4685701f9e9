//! The README's results section is generated, not typed: the block between its
//! `<!-- results:begin -->` and `<!-- results:end -->` lines must be exactly what
//! `infomax report --markdown` renders from the committed `reports/reference.sqlite`
//! (`just results` writes it).

use std::path::Path;

use infomax_report::markdown;

#[test]
fn the_readme_results_are_what_the_reference_database_renders() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme_path = root.join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let db = root.join("reports/reference.sqlite");
    assert!(db.is_file(), "{} is missing: the README's numbers come from it", db.display());
    let rendered = markdown::results(&db).unwrap();
    let block = markdown::block_of(&readme_path, &readme).unwrap();
    assert!(
        block == rendered.trim(),
        "README.md's results differ from what reports/reference.sqlite renders; run `just results`.\n\
         README:\n{block}\n\nrendered:\n{rendered}"
    );
    assert!(!rendered.starts_with("No finished runs"), "the reference database has no finished run");
}
