//! `infomax datasets`: list, verify, preview and fetch through the binary, on the real CIFAR-10
//! (when `INFOMAX_DATA` holds it) and on fixtures written here in the official layout.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn infomax(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_infomax")).arg("--data-dir").arg(data).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The shared data root, when the environment names one that holds CIFAR-10.
fn shared_root() -> Option<PathBuf> {
    let root = PathBuf::from(std::env::var_os("INFOMAX_DATA")?);
    let root = if root.is_relative() { Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(root) } else { root };
    root.join("cifar-10-batches-bin").is_dir().then_some(root)
}

/// A CIFAR-100 test split (10,000 records; coarse r % 20, fine r % 100) and its name files.
fn cifar100_test_only(root: &Path) {
    let dir = root.join("cifar-100-binary");
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = vec![0u8; 10_000 * 3074];
    for (r, rec) in bytes.chunks_mut(3074).enumerate() {
        rec[0] = (r % 20) as u8;
        rec[1] = (r % 100) as u8;
        for (i, p) in rec[2..].iter_mut().enumerate() {
            *p = ((i / 32 * 8 + r) % 256) as u8; // horizontal stripes
        }
    }
    std::fs::write(dir.join("test.bin"), bytes).unwrap();
    let names = |n: usize| (0..n).map(|i| format!("class{i}\n")).collect::<String>();
    std::fs::write(dir.join("fine_label_names.txt"), names(100)).unwrap();
    std::fs::write(dir.join("coarse_label_names.txt"), names(20)).unwrap();
}

#[test]
fn verify_passes_on_the_shared_cifar10_and_reports_its_checksums() {
    let Some(root) = shared_root() else {
        eprintln!("INFOMAX_DATA has no CIFAR-10: nothing to check");
        return;
    };
    let out = infomax(&root, &["datasets", "verify", "cifar10", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["problems"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(r["splits"][0]["images"], 50_000);
    assert_eq!(r["splits"][1]["class_min"], 1_000);
    assert_eq!(r["checksums"].as_array().unwrap().len(), 6);
    let list = infomax(&root, &["datasets", "list"]);
    assert!(text(&list).contains("cifar10        present"), "{}", text(&list));
}

#[test]
fn a_partial_dataset_fails_verify_and_previews_write_pngs() {
    let tmp = tempfile::tempdir().unwrap();
    cifar100_test_only(tmp.path());
    let out = infomax(tmp.path(), &["datasets", "verify", "cifar100"]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("test       10000 images") && t.contains("100..100 per class"), "{t}");
    assert!(t.contains("PROBLEM") && t.contains("train.bin") && t.contains("verify: FAILED"), "{t}");

    let png = tmp.path().join("grid.png");
    let out = infomax(
        tmp.path(),
        &["datasets", "preview", "cifar100", "--split", "test", "--index", "3", "9", "--views", "2", "--out"],
    );
    assert!(!out.status.success(), "--out is required");
    let mut args = vec!["datasets", "preview", "cifar100", "--split", "test", "--index", "3", "9", "--views", "2"];
    args.extend(["--preset", "fair", "--out", png.to_str().unwrap()]);
    let out = infomax(tmp.path(), &args);
    assert!(out.status.success(), "{}", text(&out));
    // Two rows, three 96-px tiles each (32 px × 3) with 4-px gaps.
    assert!(text(&out).contains("(304×204 px)"), "{}", text(&out));
    assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");

    // An experiment's augmentations, with an override, on this dataset.
    let exp = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/barlow-twins.toml");
    let mut args = vec!["datasets", "preview", "cifar100", "--split", "test", "--index", "1", "--views", "1"];
    args.extend([
        "--experiment",
        exp.to_str().unwrap(),
        "--set",
        "augment.preset=fair",
        "--out",
        png.to_str().unwrap(),
    ]);
    let out = infomax(tmp.path(), &args);
    assert!(out.status.success(), "{}", text(&out));
    let raw = tmp.path().join("raw.png");
    let out = infomax(
        tmp.path(),
        &[
            "datasets",
            "preview",
            "cifar100",
            "--split",
            "test",
            "--index",
            "5",
            "--raw",
            "--out",
            raw.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("(32×32 px)"), "{}", text(&out));
    let out = infomax(
        tmp.path(),
        &[
            "datasets",
            "preview",
            "cifar100",
            "--split",
            "test",
            "--index",
            "5",
            "6",
            "--raw",
            "--out",
            raw.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success() && text(&out).contains("exactly one --index"), "{}", text(&out));
    let out = infomax(
        tmp.path(),
        &["datasets", "preview", "cifar100", "--split", "unlabeled", "--out", raw.to_str().unwrap()],
    );
    assert!(!out.status.success() && text(&out).contains("no split `unlabeled`"), "{}", text(&out));
}

#[test]
fn fetch_without_network_fails_fast_naming_the_url_and_the_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let url = "http://127.0.0.1:9/stl10_binary.tar.gz";
    let started = std::time::Instant::now();
    let out = infomax(tmp.path(), &["datasets", "fetch", "stl10", "--url", url]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains(url) && t.contains("stl10_binary") && t.contains(".infomax-downloads"), "{t}");
    assert!(started.elapsed().as_secs() < 20, "fails fast");
    assert!(!tmp.path().join("stl10_binary").exists());
    let out = infomax(tmp.path(), &["datasets", "verify", "imagenet-21k"]);
    assert!(!out.status.success() && text(&out).contains("tiny-imagenet, imagenet, imagenet100"), "{}", text(&out));
}

/// A `.npy` of f32 as `datasets preview --npy` writes it: its shape and values.
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    let dims = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let shape = dims.split(',').filter(|d| !d.trim().is_empty()).map(|d| d.trim().parse().unwrap()).collect();
    let values = bytes[10 + len..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    (shape, values)
}

/// `preview --npy` writes the normalised views training draws, image by image from their own
/// streams: the first images' views do not depend on how many are written, and every epoch and
/// view is a new draw.
#[test]
fn preview_npy_writes_the_views_training_draws() {
    let tmp = tempfile::tempdir().unwrap();
    cifar100_test_only(tmp.path());
    let npy = |name: &str, first: &str, epochs: &str| {
        let path = tmp.path().join(name);
        let out = infomax(
            tmp.path(),
            &[
                "datasets",
                "preview",
                "cifar100",
                "--split",
                "test",
                "--seed",
                "3",
                "--npy",
                path.to_str().unwrap(),
                "--first",
                first,
                "--epochs",
                epochs,
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("epochs, images, views, channels, height, width"), "{}", text(&out));
        read_npy(&path)
    };
    let (shape, five) = npy("five.npy", "5", "2");
    assert_eq!(shape, [2, 5, 2, 3, 32, 32]);
    let (_, three) = npy("three.npy", "3", "1");
    let plane = 3 * 32 * 32;
    // Epoch 1, images 0-2, both views: the same pixels whichever slice was asked for.
    assert_eq!(&five[..3 * 2 * plane], &three[..]);
    let at = |e: usize, i: usize, v: usize| &five[((e * 5 + i) * 2 + v) * plane..][..plane];
    assert_ne!(at(0, 1, 0), at(0, 1, 1), "two views are two draws");
    assert_ne!(at(0, 1, 0), at(1, 1, 0), "each epoch draws anew");
    // Normalised: the striped fixture's pixels spread around zero, not in [0, 1].
    assert!(five.iter().any(|&x| x < -0.5) && five.iter().all(|x| x.is_finite()));
    let refused = tmp.path().join("refused.npy");
    let bad = infomax(
        tmp.path(),
        &["datasets", "preview", "cifar100", "--split", "test", "--npy", refused.to_str().unwrap(), "--first", "0"],
    );
    assert!(!refused.exists(), "nothing written for work not done");
    // An array beyond the machine's memory is refused before it is built.
    let huge = infomax(
        tmp.path(),
        &[
            "datasets",
            "preview",
            "cifar100",
            "--split",
            "test",
            "--npy",
            refused.to_str().unwrap(),
            "--epochs",
            "100000000",
        ],
    );
    assert!(!huge.status.success() && text(&huge).contains("--npy: needs"), "{}", text(&huge));
    assert!(!refused.exists());
    assert!(!bad.status.success() && text(&bad).contains("--npy: 1 to 10000 images"), "{}", text(&bad));
}
