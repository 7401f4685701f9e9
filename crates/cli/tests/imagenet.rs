//! ImageNet-100 end to end through the binary, on a stand-in with the real class names: an
//! ILSVRC-2012 folder (`imagenet/train/<wnid>/*.JPEG`, a flat `val/` with the devkit's ground
//! truth) whose images are real CIFAR-10 pictures enlarged to ImageNet-like sizes. It is
//! verified, previewed, benchmarked and trained (a toy VICReg run at 224 px with the ImageNet
//! stem), and an image that stops decoding mid-run fails the run naming it, or is skipped and
//! counted under `--skip-unreadable`.
//!
//! Needs CIFAR-10: `INFOMAX_DATA` (CI points it at `../shared/datasets`), else `./datasets`.

mod common;

use std::path::Path;

use common::{command, data_root, scalar, text, workspace_root};

/// The stand-in under `root/imagenet/`: solo-learn's 100 classes plus two other ILSVRC classes
/// (which ImageNet-100 must not read), `per_class` training JPEGs each, one validation JPEG per
/// class in the flat layout with its devkit ID on the ground truth's matching line.
fn write_stand_in(root: &Path, per_class: usize) -> Vec<String> {
    let list = workspace_root().join("crates/data/src/imagenet");
    let hundred: Vec<String> =
        std::fs::read_to_string(list.join("imagenet100_classes.txt")).unwrap().lines().map(String::from).collect();
    let devkit: Vec<String> =
        std::fs::read_to_string(list.join("devkit_classes.txt")).unwrap().lines().map(String::from).collect();
    let mut classes = hundred.clone();
    classes.extend(["n01440764".to_string(), "n15075141".to_string()]);
    let batch = std::fs::read(data_root().join("cifar-10-batches-bin/test_batch.bin")).unwrap();
    let mut records = batch.chunks(3073);
    let mut jpeg = |path: &Path, k: usize| {
        let px = &records.next().unwrap()[1..];
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            let i = (y * 32 + x) as usize;
            image::Rgb([px[i], px[1024 + i], px[2048 + i]])
        });
        // Landscape and portrait, as ImageNet's photos come.
        let (w, h) = if k.is_multiple_of(2) { (96, 72) } else { (64, 80) };
        image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle).save(path).unwrap();
    };
    let dir = root.join("imagenet");
    let mut truth = String::new();
    std::fs::create_dir_all(dir.join("val")).unwrap();
    for (c, wnid) in classes.iter().enumerate() {
        let folder = dir.join("train").join(wnid);
        std::fs::create_dir_all(&folder).unwrap();
        for k in 0..per_class {
            jpeg(&folder.join(format!("{wnid}_{k}.JPEG")), k);
        }
        jpeg(&dir.join(format!("val/ILSVRC2012_val_{:08}.JPEG", c + 1)), c);
        truth.push_str(&format!("{}\n", devkit.iter().position(|w| w == wnid).unwrap() + 1));
    }
    std::fs::write(dir.join("ILSVRC2012_validation_ground_truth.txt"), truth).unwrap();
    hundred
}

fn infomax_in(root: &Path, args: &[&str]) -> (bool, String) {
    let out = command().env("INFOMAX_DATA", root).args(args).output().unwrap();
    (out.status.success(), text(&out))
}

const EXPERIMENT: &str = r#"[experiment]
name = "imagenet100-toy"
title = "VICReg on an ImageNet-100 stand-in"
paper = "Bardes, Ponce & LeCun, VICReg, ICLR 2022"
reproduces = "that ImageNet-100 trains end to end from its files"

[base]
method = "vicreg"
dataset = "imagenet100"
encoder = { width = 0.125 }
projector = { widths = [64, 64] }
train = { epochs = 1, batch_size = 16, train_images = 48 }
optimizer = { warmup_epochs = 0.2 }
eval = { bank_images = 200, test_images = 0, linear_epochs = 0, batch_size = 50 }

[profiles.toy]
about = "One epoch over 48 images at 224 px."
"#;

#[test]
fn imagenet100_is_verified_previewed_benchmarked_and_trained_from_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    let hundred = write_stand_in(&root, 3);

    let (ok, said) = infomax_in(&root, &["datasets", "verify", "imagenet100"]);
    // Counts are the stand-in's, not the official 126,689 / 5,000: verify says so and fails.
    assert!(!ok && said.contains("train: 300 images, expected 126689"), "{said}");
    assert!(said.contains("test: 100 images, expected 5000") && !said.contains("not a readable"), "{said}");

    let png = tmp.path().join("preview.png");
    let (ok, said) = infomax_in(
        &root,
        &["datasets", "preview", "imagenet100", "--index", "0", "--out"]
            .iter()
            .copied()
            .chain([png.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(ok && png.is_file(), "{said}");

    let (ok, said) =
        infomax_in(&root, &["bench", "augment", "--dataset", "imagenet100", "--batch", "8", "--batches", "1"]);
    assert!(ok && said.contains("files decoded per batch → 224 px views"), "{said}");

    let experiment = tmp.path().join("toy.toml");
    std::fs::write(&experiment, EXPERIMENT).unwrap();
    let db = tmp.path().join("results.sqlite");
    let html = tmp.path().join("html");
    let run = |db: &Path, extra: &[&str]| {
        let args = ["reproduce", experiment.to_str().unwrap(), "--profile", "toy", "--db", db.to_str().unwrap()];
        let tail = ["--no-progress", "--no-tensorboard", "--out", html.to_str().unwrap()];
        infomax_in(&root, &[&args[..], &tail[..], extra].concat())
    };
    let (ok, said) = run(&db, &[]);
    assert!(ok, "{said}");
    assert_eq!(scalar(&db, "SELECT status FROM runs"), "finished");
    assert_eq!(scalar(&db, "SELECT dataset FROM runs"), "imagenet100");
    let config = |path: &str| scalar(&db, &format!("SELECT json_extract(config_json, '{path}') FROM runs"));
    assert_eq!((config("$.encoder.small_stem"), config("$.encoder.max_pool")), ("0".into(), "1".into()));
    assert_eq!((config("$.augment.eval_resize"), config("$.augment.eval_crop")), ("256".into(), "224".into()));
    // Bank: 200 training images spread over the classes; queries: the 100 validation images of
    // the subset (the two other classes' are not read).
    assert_eq!(scalar(&db, "SELECT group_concat(DISTINCT bank_size || '/' || test_size) FROM evaluations"), "200/100");

    // An image that no longer decodes is met mid-epoch: the run fails naming it ...
    let bad = root.join("imagenet/train").join(&hundred.iter().min().unwrap()[..]);
    let bad = std::fs::read_dir(bad).unwrap().map(|e| e.unwrap().path()).min().unwrap();
    std::fs::write(&bad, &b"\xff\xd8\xff\xe0\x00\x10JFIF"[..]).unwrap();
    let db2 = tmp.path().join("second.sqlite");
    let (ok, said) = run(&db2, &[]);
    let name = bad.file_name().unwrap().to_str().unwrap();
    assert!(!ok && said.contains(name) && said.contains("not a readable image"), "{said}");
    assert_eq!(scalar(&db2, "SELECT status FROM runs"), "failed");
    assert!(scalar(&db2, "SELECT status_detail FROM runs").contains(name));
    // ... or, allowed, is skipped, logged and counted on the run's record.
    let db3 = tmp.path().join("third.sqlite");
    let (ok, said) = run(&db3, &["--skip-unreadable"]);
    assert!(ok && said.contains("skipping an unreadable image") && said.contains(name), "{said}");
    assert_eq!(scalar(&db3, "SELECT status FROM runs"), "finished");
    let detail = scalar(&db3, "SELECT status_detail FROM runs");
    assert!(detail.starts_with("1 unreadable images skipped") && detail.contains(name), "{detail}");
}

#[test]
fn imagenet_without_its_files_says_how_to_get_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, said) = infomax_in(tmp.path(), &["datasets", "fetch", "imagenet"]);
    assert!(!ok && said.contains("no public download") && said.contains("image-net.org"), "{said}");
    let (ok, said) = infomax_in(tmp.path(), &["datasets", "verify", "imagenet100"]);
    assert!(!ok && said.contains("imagenet-100") && said.contains("ILSVRC2012_img_train.tar"), "{said}");
    let (ok, said) = infomax_in(tmp.path(), &["datasets", "verify", "imagenet100", "--image-size", "96"]);
    assert!(!ok && said.contains("--image-size 96") && said.contains("only image folders"), "{said}");
}
