//! `infomax datasets list | verify | fetch | preview | stats`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use infomax_data::{Dataset, DatasetSpec, Split};
use infomax_runner::config::RunConfig;
use infomax_runner::ExperimentFile;

use crate::paths::Paths;

#[derive(Subcommand)]
pub enum DatasetsCommand {
    /// Each dataset, whether it is present under the data root, its splits and counts.
    List {
        /// Image folders to list as well (paths in torchvision's ImageFolder layout).
        folders: Vec<DatasetSpec>,
        #[command(flatten)]
        size: ImageSize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Full integrity check: every file's size, record counts, label ranges, class balance, and
    /// the published per-file MD5s (a copy that is not byte-identical to the official release is
    /// reported, not failed). Exits non-zero when anything structural is wrong.
    Verify {
        /// cifar10, cifar100, stl10, tiny-imagenet, imagenet, imagenet100 (every image decoded,
        /// the first that fail named), or an image folder: its path, or with --experiment one of
        /// that file's `[datasets.NAME]` tables (its images are decoded unless its cache is
        /// current, the first that fails is named, and its class counts and non-image files are
        /// reported).
        name: String,
        #[command(flatten)]
        size: ImageSize,
        /// The experiment whose `[datasets.NAME]` tables NAME may name (a name as `reproduce`
        /// takes it, builtin:NAME, or a path).
        #[arg(long)]
        experiment: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Download the official archive, check its published MD5, extract it atomically. A partial
    /// download resumes; without network, place the archive in DATA_DIR/.infomax-downloads/.
    /// ImageNet has no public download: the error says where to put its files.
    Fetch {
        name: Dataset,
        /// Download from this address instead (a mirror); the official MD5 is still checked.
        #[arg(long)]
        url: Option<String>,
        /// Keep the archive after extracting it.
        #[arg(long)]
        keep_archive: bool,
    },
    /// Write a PNG grid: each chosen image, then D augmented views of it as training draws them;
    /// or, with --npy, the views a run trains on as one array for another framework.
    Preview(Box<PreviewArgs>),
    /// An image folder's per-channel mean and standard deviation over its training images at
    /// their stored size. They are cached with the folder's decoded images: a run on the folder
    /// at that size that gives no `mean` and `std` normalises with them (and is refused once the
    /// training images change, until they are measured again). Also printed as the `mean` and
    /// `std` of a dataset table, for an experiment that states them.
    Stats {
        /// The path of an image folder, or with --experiment one of that file's
        /// `[datasets.NAME]` tables.
        folder: String,
        #[command(flatten)]
        size: ImageSize,
        /// The experiment whose `[datasets.NAME]` tables the name may name.
        #[arg(long)]
        experiment: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// A folder dataset's stored side, from the command line.
#[derive(Args)]
pub struct ImageSize {
    #[arg(long, value_name = "PIXELS", help = image_size_help())]
    image_size: Option<usize>,
}

/// `--image-size`'s help, with the default a folder dataset has.
fn image_size_help() -> String {
    format!(
        "Image folders: the side images are stored at (centre-cropped square, then resized) [default: {}]",
        infomax_data::folder::DEFAULT_IMAGE_SIZE
    )
}

impl ImageSize {
    /// `dataset` with the side set, if a folder; a side given for a built-in dataset, whose
    /// images have theirs, is an error rather than ignored.
    pub fn apply(&self, mut dataset: DatasetSpec) -> Result<DatasetSpec> {
        match &mut dataset {
            DatasetSpec::Folder(f) => {
                f.image_size = self.image_size.unwrap_or(infomax_data::folder::DEFAULT_IMAGE_SIZE)
            }
            DatasetSpec::Builtin(d) => {
                if let Some(side) = self.image_size {
                    bail!("--image-size {side}: only image folders take a stored side; {d}'s images have their own");
                }
            }
        }
        Ok(dataset)
    }

    /// An error if a side was given where no folder takes it.
    pub fn refuse_without_folder(&self) -> Result<()> {
        match self.image_size {
            Some(side) => bail!("--image-size {side}: no image folder named to store at that side"),
            None => Ok(()),
        }
    }
}

/// The experiment a dataset command's `--experiment` names, if any.
fn load_experiment(paths: &Paths, name: Option<String>) -> Result<Option<ExperimentFile>> {
    Ok(match name {
        Some(e) => Some(paths.experiment(&e)?.load()?),
        None => None,
    })
}

/// The dataset a command's NAME means: one of `experiment`'s `[datasets.NAME]` tables, else a
/// built-in dataset's name or an image folder's path (at `size`).
fn dataset(name: &str, size: &ImageSize, experiment: Option<&ExperimentFile>) -> Result<DatasetSpec> {
    if let Some(folder) = experiment.and_then(|file| file.datasets.get(name)) {
        if let Some(side) = size.image_size {
            bail!("--image-size {side}: `{name}` is a [datasets.{name}] table, which gives its own image_size");
        }
        return Ok(DatasetSpec::Folder(folder.clone()));
    }
    let spec = name.parse::<DatasetSpec>().map_err(|e| match experiment {
        Some(file) if !file.datasets.is_empty() => {
            let own = file.datasets.keys().cloned().collect::<Vec<_>>().join(", ");
            anyhow::anyhow!("{e} (or one of {}'s [datasets] tables: {own})", file.path.display())
        }
        _ => e.into(),
    })?;
    size.apply(spec)
}

/// `datasets preview`'s arguments.
#[derive(Args)]
pub struct PreviewArgs {
    /// A built-in dataset's name, the path of an image folder, or one of --experiment's
    /// `[datasets.NAME]` tables.
    name: String,
    #[command(flatten)]
    size: ImageSize,
    /// train, test or unlabeled.
    #[arg(long, default_value = "train")]
    split: Split,
    /// Images to show (indices into the split).
    #[arg(long = "index", value_name = "I", num_args = 1.., default_values_t = [0usize, 1, 2, 3])]
    index: Vec<usize>,
    /// Augmented views per image (the grid: 4; --npy: the experiment's `train.views`, else 2).
    #[arg(long)]
    views: Option<usize>,
    /// Augmentation preset: wmse or fair [default: fair on imagenet and imagenet100, else wmse].
    #[arg(long)]
    preset: Option<String>,
    /// Draw the views with this experiment's augmentations instead (a name as `reproduce` takes
    /// it, builtin:NAME, or a path), as its `--profile` resolves them with any `--set` overrides
    /// (the dataset stays NAME's).
    #[arg(long)]
    experiment: Option<String>,
    #[arg(long, default_value = "smoke")]
    profile: String,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Run seed and epoch the views are drawn for (the training streams).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 1)]
    epoch: u64,
    /// Write one image exactly as stored (original size, no resampling, no normalisation).
    #[arg(long)]
    raw: bool,
    #[arg(long, value_name = "FILE.png", required_unless_present = "npy", conflicts_with = "npy")]
    out: Option<PathBuf>,
    /// Write the normalised views of the first --first images in epochs 1 to --epochs, exactly
    /// as a run with --seed trains on them, as an f32 array (epochs, images, views, 3, side,
    /// side). With --experiment, the images, epochs and views default to its run's.
    #[arg(long, value_name = "FILE.npy")]
    npy: Option<PathBuf>,
    /// --npy: the first N images of the split (default: the experiment's `train.train_images`,
    /// else all).
    #[arg(long, value_name = "N", requires = "npy")]
    first: Option<usize>,
    /// --npy: epochs 1 to E (default: the experiment's `train.epochs`, else 1).
    #[arg(long, value_name = "E", requires = "npy")]
    epochs: Option<usize>,
}

/// A stored side as the tables print it; 0 is images kept at their own sizes (ImageNet's).
fn px(side: usize) -> String {
    if side == 0 {
        "any size".into()
    } else {
        format!("{side}×{side} px")
    }
}

/// Fetch `name` into `root` with a progress bar, saying what is fetched, from where and how big
/// before the download starts (`datasets fetch`, `reproduce --fetch`); a dataset already there
/// is left as it is.
pub fn fetch(name: Dataset, root: &std::path::Path, url: Option<&str>, keep_archive: bool) -> Result<()> {
    // Without a public download (ImageNet) the library's error says how to get the dataset.
    let a = name.archive();
    if let (Some(a), None) = (a, name.found(root)) {
        println!(
            "fetching {name}: {} ({:.0} MB) from {} into {}",
            a.file_name,
            a.bytes as f64 / 1e6,
            url.unwrap_or(a.url),
            root.display()
        );
    }
    let pb = a.map_or_else(indicatif::ProgressBar::hidden, |a| crate::progress::download(a.file_name, a.bytes));
    let outcome = infomax_data::fetch::fetch(name, root, url, keep_archive, &mut |done, total| {
        if let Some(t) = total {
            pb.set_length(t);
        }
        pb.set_position(done);
    });
    pb.finish_and_clear();
    match outcome? {
        infomax_data::fetch::Fetched::AlreadyPresent(p) => {
            println!("{name} is already at {}; run `infomax datasets verify {name}` to check it", p.display())
        }
        infomax_data::fetch::Fetched::Extracted(p) => println!("{name}: MD5 verified, extracted to {}", p.display()),
    }
    Ok(())
}

pub fn run(cmd: DatasetsCommand, paths: &Paths) -> Result<ExitCode> {
    let root = &paths.data_root();
    match cmd {
        DatasetsCommand::List { folders, size, json } => {
            if folders.is_empty() {
                size.refuse_without_folder()?;
            }
            let folders: Vec<_> = folders
                .into_iter()
                .map(|d| match size.apply(d)? {
                    DatasetSpec::Folder(f) => Ok(f),
                    DatasetSpec::Builtin(d) => bail!("{d} is listed anyway: name only image folders"),
                })
                .collect::<Result<_>>()?;
            let entries = infomax_data::verify::list(root, &folders);
            if json {
                println!("{}", serde_json::to_string(&entries)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("data root: {}", root.display());
            for e in entries {
                let splits: Vec<String> = e.splits.iter().map(|(s, n)| format!("{s} {n}")).collect();
                println!(
                    "{:<14} {:<8} {} classes, {}, {}  ({})",
                    e.dataset,
                    if e.present { "present" } else { "absent" },
                    e.classes,
                    px(e.side),
                    splits.join(", "),
                    e.path
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DatasetsCommand::Verify { name, size, experiment, json } => {
            let experiment = load_experiment(paths, experiment)?;
            let r = infomax_data::verify::verify(&dataset(&name, &size, experiment.as_ref())?, root)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{} at {}", r.dataset, r.path);
                for s in &r.splits {
                    let balance = match (s.class_min, s.class_max) {
                        (Some(lo), Some(hi)) => format!(", {lo}..{hi} per class"),
                        _ => ", unlabelled".into(),
                    };
                    println!("  {:<10} {} images, {}{balance}", s.split, s.images, px(s.side));
                }
                for c in &r.checksums {
                    let verdict = if c.official {
                        "official".to_string()
                    } else {
                        format!("differs from the official {}", c.official_md5)
                    };
                    println!("  md5 {:<16} {} ({verdict})", c.file, c.md5);
                }
                if r.checksums.iter().any(|c| !c.official) {
                    println!("  note: files that differ from the official release are a rebuilt or modified copy; published accuracies may not transfer exactly");
                }
                for n in &r.notes {
                    println!("  note: {n}");
                }
                for p in &r.problems {
                    println!("  PROBLEM: {p}");
                }
                println!("{}", if r.passed() { "verify: passed" } else { "verify: FAILED" });
            }
            Ok(if r.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        DatasetsCommand::Fetch { name, url, keep_archive } => {
            fetch(name, root, url.as_deref(), keep_archive)?;
            Ok(ExitCode::SUCCESS)
        }
        DatasetsCommand::Stats { folder, size, experiment, json } => {
            let experiment = load_experiment(paths, experiment)?;
            let DatasetSpec::Folder(f) = dataset(&folder, &size, experiment.as_ref())? else {
                bail!("stats: an image folder expected; the built-in datasets' statistics are fixed")
            };
            let (stats, images, cached) = f.measure_stats(root)?;
            if json {
                let out = serde_json::json!({
                    "dataset": f.name(), "images": images, "image_size": f.image_size,
                    "mean": stats.mean, "std": stats.std, "cached": cached,
                });
                println!("{out}");
            } else {
                println!(
                    "{}: {images} training images at {}×{} px, per channel (R, G, B) in [0, 1]",
                    f.name(),
                    f.image_size,
                    f.image_size
                );
                println!(
                    "cached at {}: runs on this folder at {} px that give no `mean` and `std` use these",
                    cached.display(),
                    f.image_size
                );
                let list = |v: [f32; 3]| v.map(|x| x.to_string()).join(", ");
                println!(
                    "dataset = {{ folder = {}, image_size = {}, mean = [{}], std = [{}] }}",
                    toml::Value::String(f.folder.clone()),
                    f.image_size,
                    list(stats.mean),
                    list(stats.std)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DatasetsCommand::Preview(args) => {
            let PreviewArgs {
                name,
                size,
                split,
                index,
                views,
                preset,
                experiment,
                profile,
                set,
                seed,
                epoch,
                raw,
                out,
                npy,
                first,
                epochs,
            } = *args;
            let file = load_experiment(paths, experiment)?.map(|f| f.with_data_root(root));
            let name = match dataset(&name, &size, file.as_ref())? {
                DatasetSpec::Folder(f) => DatasetSpec::Folder(f.with_measured_stats(root)?),
                builtin => builtin,
            };
            let preset = crate::bench::preset(preset, &name)?;
            // The experiment's run configuration for this dataset, when one is named.
            let config = match file {
                None => None,
                Some(file) => {
                    let mut overrides =
                        set.iter().map(|s| s.parse::<infomax_runner::Override>()).collect::<Result<Vec<_>, _>>()?;
                    let value = toml::Value::try_from(&name).context("the dataset as TOML")?;
                    overrides.push(format!("dataset={value}").parse()?);
                    Some(file.resolve(&profile, &overrides)?)
                }
            };
            let augment = match &config {
                None => RunConfig::augment_defaults(preset, &name),
                Some(c) => c.augment.clone(),
            };
            if let (Some(_), None, None) = (&npy, &config, name.mean_std()) {
                // The PNG grid undoes the normalisation; an array hands it on to another framework.
                bail!(
                    "--npy: a folder named on the command line carries no `mean` and `std` (`datasets stats` \
                     measures them), so {name}'s views would not be normalised as a run's are"
                );
            }
            let images = name.open(root, split, infomax_data::Unreadable::default())?;
            if let Some(npy) = npy {
                // An experiment's `train_images = 0` is every image; an explicit --first 0 is refused.
                let of_run = config.as_ref().map(|c| c.train.train_images).filter(|&n| n > 0);
                let first = first.or(of_run).unwrap_or(images.len());
                let epochs = epochs.or(config.as_ref().map(|c| c.train.epochs)).unwrap_or(1);
                let views = views.or(config.as_ref().map(|c| c.train.views)).unwrap_or(2);
                // The images a run with `train_images = first` trains on (spread over the classes of
                // a dataset read from its files), indexed as the run indexes them.
                let images = if (1..=images.len()).contains(&first) { images.subset(first) } else { images };
                let shape = infomax_runner::npy::write_views(&images, first, epochs, views, &augment, seed, &npy)?;
                println!(
                    "views: {} (f32, shape {shape:?}: epochs, images, views, channels, height, width)",
                    npy.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let out = out.expect("clap requires --out without --npy");
            let img = if raw {
                if index.len() != 1 {
                    bail!("--raw writes one image exactly as stored: give exactly one --index (got {})", index.len());
                }
                infomax_data::preview::raw(&images, index[0])?
            } else {
                let views = views.unwrap_or(4);
                if views > 16 {
                    bail!("--views {views}: at most 16 expected");
                }
                infomax_data::preview::grid(&images, &index, views, &augment, seed, epoch)?
            };
            infomax_data::preview::save_png(&img, &out)?;
            println!("preview: {} ({}×{} px)", out.display(), img.width(), img.height());
            Ok(ExitCode::SUCCESS)
        }
    }
}
