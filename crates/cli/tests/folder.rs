//! A folder of the user's own images, end to end through the binary: real CIFAR-10 images
//! written as an ImageFolder (JPEG and PNG, at two sizes), its statistics, its verification, the
//! streaming pipeline's benchmark, a toy VICReg run on it, and each way a folder can be wrong
//! failing before a run row exists.
//!
//! Needs CIFAR-10: `INFOMAX_DATA` (CI points it at `../shared/datasets`), else `./datasets`.

mod common;

use std::path::Path;

use common::{data_root, infomax, scalar, text};

const CLASSES: [&str; 10] = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// `train/<class>/` with `per_class` and `val/<class>/` with `val_per_class` images of the first
/// `classes` CIFAR-10 classes, taken in order from the official test batch; even images are
/// JPEGs enlarged to 48×40 px, odd ones PNGs at 32×32.
fn write_image_folder(dir: &Path, classes: usize, per_class: usize, val_per_class: usize) {
    let batch = std::fs::read(data_root().join("cifar-10-batches-bin/test_batch.bin")).unwrap();
    let mut taken = vec![0usize; classes];
    for record in batch.chunks(3073) {
        let label = record[0] as usize;
        if label >= classes || taken[label] == per_class + val_per_class {
            continue;
        }
        let k = taken[label];
        taken[label] += 1;
        let px = &record[1..];
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            let i = (y * 32 + x) as usize;
            image::Rgb([px[i], px[1024 + i], px[2048 + i]])
        });
        let split = if k < per_class { "train" } else { "val" };
        let folder = dir.join(split).join(CLASSES[label]);
        std::fs::create_dir_all(&folder).unwrap();
        if k.is_multiple_of(2) {
            let big = image::imageops::resize(&img, 48, 40, image::imageops::FilterType::Triangle);
            big.save(folder.join(format!("{k:04}.jpg"))).unwrap();
        } else {
            img.save(folder.join(format!("{k:04}.png"))).unwrap();
        }
    }
    assert!(taken.iter().all(|&n| n == per_class + val_per_class), "{taken:?}");
}

/// A toy VICReg experiment over `dataset` (a TOML value), with `tables` after it (the file's
/// `[datasets.NAME]`).
fn write_experiment_with(path: &Path, dataset: &str, tables: &str) {
    let text = format!(
        r#"[experiment]
name = "folder-toy"
title = "VICReg on a folder of images"
paper = "Bardes, Ponce & LeCun, VICReg, ICLR 2022"
reproduces = "that a folder dataset trains end to end"

[base]
method = "vicreg"
dataset = {dataset}
encoder = {{ width = 0.125 }}
projector = {{ widths = [64, 64] }}
train = {{ epochs = 1, batch_size = 32 }}
optimizer = {{ warmup_epochs = 0.2 }}
eval = {{ bank_images = 0, test_images = 0, linear_epochs = 0 }}

[profiles.toy]
about = "One epoch over a few hundred images."
{tables}"#
    );
    std::fs::write(path, text).unwrap();
}

/// [`write_experiment_with`] a dataset written inline.
fn write_experiment(path: &Path, dataset: &str) {
    write_experiment_with(path, dataset, "");
}

#[test]
fn a_folder_of_real_images_is_measured_verified_and_trained() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("animals");
    write_image_folder(&folder, 4, 48, 12);
    let path = folder.to_str().unwrap();

    let out = infomax(&["datasets", "stats", path, "--image-size", "32"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("animals: 192 training images at 32×32 px"), "{said}");
    let table = said.lines().find(|l| l.starts_with("dataset = {")).expect("the dataset table").to_string();
    let dataset = table.trim_start_matches("dataset = ");
    assert!(dataset.contains("mean = [0.") && dataset.contains("std = [0."), "{dataset}");

    let out = infomax(&["datasets", "verify", path, "--image-size", "32"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("train      192 images, 32×32 px, 48..48 per class"), "{said}");
    assert!(said.contains("test       48 images, 32×32 px, 12..12 per class"), "{said}");

    // The streaming pipeline's benchmark decodes the files for every batch.
    let out = infomax(&["bench", "augment", "--dataset", path, "--image-size", "24", "--batch", "8", "--batches", "1"]);
    let said = text(&out);
    assert!(out.status.success() && said.contains("on animals (files decoded per batch → 24 px views)"), "{said}");
    assert!(said.contains("decoding the files whole, alone: "), "the decoder's share: {said}");

    // The file names the folder by a `[datasets.NAME]` table of its own, training on 28-px crops
    // of the 32-px images (evaluation centre-crops them likewise). The table gives no statistics:
    // the run normalises with those `datasets stats` cached.
    let experiment = tmp.path().join("toy.toml");
    let fields = format!("folder = {path:?}\nimage_size = 32\n");
    write_experiment_with(&experiment, "\"animals\"", &format!("\n[datasets.animals]\n{fields}crop_size = 28\n"));
    let out = infomax(&["datasets", "stats", "animals", "--experiment", experiment.to_str().unwrap(), "--json"]);
    let said = text(&out);
    assert!(out.status.success() && said.contains("\"images\":192") && said.contains("\"cached\""), "{said}");
    let db = tmp.path().join("results.sqlite");
    let (db_arg, html) = (db.to_str().unwrap(), tmp.path().join("html"));
    let args = ["reproduce", experiment.to_str().unwrap(), "--profile", "toy", "--db", db_arg, "--no-progress"];
    let out = infomax(&[&args[..], &["--out", html.to_str().unwrap(), "--no-tensorboard"]].concat());
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert_eq!(scalar(&db, "SELECT status FROM runs"), "finished");
    assert_eq!(scalar(&db, "SELECT dataset FROM runs"), "animals");
    let stored_mean = scalar(&db, "SELECT json_extract(config_json, '$.augment.mean') FROM runs");
    assert!(dataset.contains(&stored_mean.replace(',', ", ")), "the folder's mean normalises: {stored_mean}");
    let config = |path: &str| scalar(&db, &format!("SELECT json_extract(config_json, '{path}') FROM runs"));
    assert_eq!((config("$.dataset.image_size"), config("$.dataset.crop_size")), ("32".into(), "28".into()));
    assert_eq!((config("$.augment.view_a.size"), config("$.augment.eval_crop")), ("28".into(), "28".into()));
    assert_eq!((config("$.encoder.small_stem"), config("$.encoder.max_pool")), ("1".into(), "0".into()));
    // The k-NN evaluations of the random and the trained encoder: bank 192, test the 48 val images.
    assert_eq!(scalar(&db, "SELECT group_concat(DISTINCT epoch) FROM evaluations"), "0,1");
    assert_eq!(scalar(&db, "SELECT group_concat(DISTINCT bank_size || '/' || test_size) FROM evaluations"), "192/48");

    // A training image added since the statistics were measured: runs are refused until they are
    // measured again.
    std::fs::copy(folder.join("train/bird/0001.png"), folder.join("train/bird/extra.png")).unwrap();
    let out = infomax(&[&args[..], &["--no-tensorboard"]].concat());
    let said = text(&out);
    assert!(
        !out.status.success() && said.contains("other training images") && said.contains("datasets stats"),
        "{said}"
    );
    assert_eq!(scalar(&db, "SELECT count(*) FROM runs"), "1", "no run row for the refused plan");
}

#[test]
fn a_wrong_folder_fails_before_any_run_row_naming_the_place() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("few");
    write_image_folder(&folder, 2, 40, 4);
    let experiment = tmp.path().join("toy.toml");
    let db = tmp.path().join("results.sqlite");
    let run = |dataset: &str| {
        write_experiment(&experiment, dataset);
        let args = ["reproduce", experiment.to_str().unwrap(), "--profile", "toy", "--db", db.to_str().unwrap()];
        let out = infomax(&[&args[..], &["--no-progress", "--no-tensorboard"]].concat());
        (out.status.success(), text(&out))
    };
    let at = format!("folder = {:?}, image_size = 32", folder.to_str().unwrap());
    let stats = "mean = [0.5, 0.5, 0.5], std = [0.25, 0.25, 0.25]";

    let (ok, said) = run(&format!("{{ {at} }}"));
    assert!(!ok && said.contains("dataset.mean") && said.contains("infomax datasets stats"), "{said}");

    std::fs::create_dir(folder.join("train/zebra")).unwrap();
    let (ok, said) = run(&format!("{{ {at}, {stats} }}"));
    assert!(!ok && said.contains("train/zebra") && said.contains("holds no image"), "empty class: {said}");
    std::fs::remove_dir(folder.join("train/zebra")).unwrap();

    std::fs::create_dir(folder.join("val/zebra")).unwrap();
    std::fs::write(folder.join("val/zebra/1.png"), b"").unwrap();
    let (ok, said) = run(&format!("{{ {at}, {stats} }}"));
    assert!(!ok && said.contains("val/zebra") && said.contains("not a class of"), "stray class: {said}");
    std::fs::remove_dir_all(folder.join("val/zebra")).unwrap();

    std::fs::write(folder.join("train/automobile/0002.jpg"), &b"\xff\xd8\xff\xe0\x00\x10JFIF"[..]).unwrap();
    let (ok, said) = run(&format!("{{ {at}, {stats} }}"));
    assert!(!ok && said.contains("automobile/0002.jpg") && said.contains("not a readable image"), "{said}");

    let (ok, said) = run(&format!("{{ {at}, {stats}, imagesize = 3 }}"));
    assert!(!ok && said.contains("unknown field `imagesize`") && said.contains("toy.toml"), "{said}");

    // An experiment written for CIFAR-10 states CIFAR-10's normalisation: on a folder it is refused.
    let set = format!("dataset={{ {at}, {stats} }}");
    let out = infomax(&["reproduce", "smoke", "--set", &set, "--db", db.to_str().unwrap(), "--no-progress"]);
    let said = text(&out);
    assert!(!out.status.success() && said.contains("augment.mean") && said.contains("smoke.toml"), "{said}");

    // Views handed to another framework without the folder's statistics would not be a run's.
    let npy = tmp.path().join("views.npy");
    let out = infomax(&["datasets", "preview", folder.to_str().unwrap(), "--npy", npy.to_str().unwrap()]);
    let said = text(&out);
    assert!(!out.status.success() && said.contains("--npy") && said.contains("`mean` and `std`"), "{said}");
    assert!(!npy.exists());

    if db.exists() {
        assert_eq!(scalar(&db, "SELECT count(*) FROM runs"), "0", "no run row for bad input");
    }
}
