//! `infomax datasets fetch`: download a dataset's official archive, verify its published MD5,
//! and extract it atomically.
//!
//! - The download goes to `<root>/.infomax-downloads/<archive>.part`; an interrupted download
//!   resumes with an HTTP range request (a server that ignores it restarts the file).
//! - The finished file is renamed to `<archive>` only once its MD5 equals the published one; a
//!   mismatch deletes it and says so. An archive placed there by hand is verified and used, which
//!   is how machines without network get a dataset.
//! - Extraction goes into a temporary folder under the root; the dataset folder is moved into
//!   place with one rename, so `<root>/<dir>` is either absent or complete.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::verify::md5_file;
use crate::{Dataset, Error, Result};

/// What `fetch` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// A folder of one of the dataset's layouts (or a file where the fetched folder goes)
    /// already existed; nothing was downloaded (run `verify` to check it).
    AlreadyPresent(PathBuf),
    /// Downloaded (or found in the downloads folder), verified and extracted to this folder.
    Extracted(PathBuf),
}

/// Where downloads are kept until they are verified and extracted.
pub fn downloads_dir(root: &Path) -> PathBuf {
    root.join(".infomax-downloads")
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Download `url` to `part`, resuming from its current length; `progress(done, total)`.
pub fn download_resumable(url: &str, part: &Path, progress: &mut dyn FnMut(u64, Option<u64>)) -> Result<()> {
    let network = |what: String| Error::Network { url: url.to_string(), what };
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(url);
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let resp = req.call().map_err(|e| network(e.to_string()))?;
    let status = resp.status().as_u16();
    let length = resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let (mut file, start, total) = match status {
        206 => {
            let f = OpenOptions::new().append(true).open(part).map_err(io(part))?;
            (f, have, length.map(|l| l + have))
        }
        200 => (File::create(part).map_err(io(part))?, 0, length),
        // The part file already holds the whole body.
        416 if have > 0 => return Ok(()),
        s => return Err(network(format!("the server answered HTTP {s}"))),
    };
    let mut reader = resp.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = start;
    progress(done, total);
    loop {
        let n =
            reader.read(&mut buf).map_err(|e| network(format!("the download broke off after {done} bytes: {e}")))?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).map_err(io(part))?;
        done += n as u64;
        progress(done, total);
    }
    file.sync_all().map_err(io(part))?;
    if let Some(t) = total {
        if done != t {
            return Err(network(format!("received {done} of {t} bytes; run the same command again to resume")));
        }
    }
    Ok(())
}

/// Extract a `.tar.gz` or `.zip` archive so that `<root>/<dir>` appears complete or not at all.
pub fn extract_atomically(archive: &Path, root: &Path, dir: &str) -> Result<PathBuf> {
    let dest = root.join(dir);
    let staging = root.join(format!(".infomax-extract-{dir}-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    let result = (|| -> Result<()> {
        let file = File::open(archive).map_err(io(archive))?;
        let bad = |what: String| Error::Format { dataset: "archive", path: archive.to_path_buf(), what };
        let name = archive.to_string_lossy();
        if name.ends_with(".zip") {
            let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(format!("not a readable zip: {e}")))?;
            zip.extract(&staging).map_err(|e| bad(format!("cannot extract: {e}")))?;
        } else {
            let gz = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
            tar::Archive::new(gz).unpack(&staging).map_err(|e| bad(format!("cannot extract: {e}")))?;
        }
        let inner = staging.join(dir);
        if !inner.is_dir() {
            return Err(bad(format!("the archive holds no `{dir}/` folder")));
        }
        std::fs::rename(&inner, &dest).map_err(io(&dest))
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result.map(|()| dest)
}

/// Fetch `dataset` into `root`: download (or reuse a downloaded archive), verify the published
/// MD5, extract atomically, and remove the archive unless `keep_archive`. `url` replaces the
/// official address (a mirror); the MD5 checked is always the official one.
pub fn fetch(
    dataset: Dataset,
    root: &Path,
    url: Option<&str>,
    keep_archive: bool,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Fetched> {
    // Any layout counts: a torchvision download is read as it is, nothing is fetched beside it.
    if let Some((_, dir)) = dataset.found(root) {
        return Ok(Fetched::AlreadyPresent(root.join(dir)));
    }
    let dest = root.join(dataset.dir());
    if dest.exists() {
        return Ok(Fetched::AlreadyPresent(dest));
    }
    let Some(a) = dataset.archive() else {
        return Err(Error::Request(format!("{dataset} cannot be fetched: {}", dataset.how_to_get(root))));
    };
    fetch_archive(root, dataset.dir(), url.unwrap_or(a.url), a.file_name, a.md5, keep_archive, progress)
}

/// [`fetch`] for any archive: the pieces the tests drive with their own archive and MD5.
pub fn fetch_archive(
    root: &Path,
    dir: &str,
    url: &str,
    file_name: &str,
    md5: &str,
    keep_archive: bool,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Fetched> {
    let downloads = downloads_dir(root);
    std::fs::create_dir_all(&downloads).map_err(io(&downloads))?;
    let archive = downloads.join(file_name);
    let part = downloads.join(format!("{file_name}.part"));
    if !archive.exists() {
        download_resumable(url, &part, progress).map_err(|e| match e {
            Error::Network { url, what } => {
                Error::Offline { url, what, archive: archive.clone(), dest: root.join(dir) }
            }
            other => other,
        })?;
        let got = md5_file(&part)?;
        if got != md5 {
            let _ = std::fs::remove_file(&part);
            return Err(Error::Checksum { path: part, got, expected: md5.to_string() });
        }
        std::fs::rename(&part, &archive).map_err(io(&archive))?;
    } else {
        let got = md5_file(&archive)?;
        if got != md5 {
            return Err(Error::Checksum { path: archive, got, expected: md5.to_string() });
        }
    }
    let dest = extract_atomically(&archive, root, dir)?;
    if !keep_archive {
        let _ = std::fs::remove_file(&archive);
    }
    Ok(Fetched::Extracted(dest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// A one-file HTTP server on localhost that honours `Range` (when `ranges`) and can cut the
    /// first response short after `cut` bytes, like a dropped connection.
    fn serve(body: Vec<u8>, ranges: bool, cut: Option<usize>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/archive", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            let mut first = true;
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut range_from = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("range: bytes=") {
                        range_from = v.trim().trim_end_matches('-').parse().unwrap();
                    }
                }
                log.lock().unwrap().push(format!("range {range_from}"));
                let (status, from) =
                    if ranges && range_from > 0 { ("206 Partial Content", range_from) } else { ("200 OK", 0) };
                let rest = &body[from..];
                let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", rest.len());
                stream.write_all(head.as_bytes()).unwrap();
                let send = if first { cut.unwrap_or(rest.len()).min(rest.len()) } else { rest.len() };
                let _ = stream.write_all(&rest[..send]);
                first = false;
            }
        });
        (url, seen)
    }

    /// A `.tar.gz` holding `dir/a.bin` and `dir/sub/b.txt`, and its MD5.
    fn archive(dir: &str) -> (Vec<u8>, String) {
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        // Incompressible content, so the archive is large enough to cut in the middle.
        let a: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for (name, data) in [(format!("{dir}/a.bin"), a), (format!("{dir}/sub/b.txt"), b"hello".to_vec())] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        let bytes = tar.into_inner().unwrap().finish().unwrap();
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), &bytes).unwrap();
        let md5 = md5_file(tmp.path()).unwrap();
        (bytes, md5)
    }

    #[test]
    fn a_broken_download_resumes_and_extracts_atomically() {
        let (bytes, md5) = archive("ds");
        let (url, seen) = serve(bytes.clone(), true, Some(bytes.len() / 3));
        let root = tempfile::tempdir().unwrap();
        let mut calls = 0;
        let err = fetch_archive(root.path(), "ds", &url, "ds.tar.gz", &md5, false, &mut |_, _| calls += 1).unwrap_err();
        assert!(err.to_string().contains("broke off") || err.to_string().contains("received"), "{err}");
        assert!(!root.path().join("ds").exists(), "nothing extracted from a partial download");
        let part = downloads_dir(root.path()).join("ds.tar.gz.part");
        let partial = std::fs::metadata(&part).unwrap().len();
        assert!(partial > 0 && partial < bytes.len() as u64);
        let got = fetch_archive(root.path(), "ds", &url, "ds.tar.gz", &md5, false, &mut |_, _| calls += 1).unwrap();
        assert_eq!(got, Fetched::Extracted(root.path().join("ds")));
        assert_eq!(seen.lock().unwrap()[1], format!("range {partial}"), "the second request resumed");
        assert_eq!(std::fs::read(root.path().join("ds/sub/b.txt")).unwrap(), b"hello");
        assert!(!part.exists() && !downloads_dir(root.path()).join("ds.tar.gz").exists(), "archive removed");
        let leftovers: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".infomax-extract"))
            .collect();
        assert!(leftovers.is_empty(), "no staging folder left");
        assert!(calls > 0);
    }

    #[test]
    fn a_server_without_ranges_restarts_and_a_wrong_md5_deletes_the_download() {
        let (bytes, md5) = archive("ds");
        let (url, _) = serve(bytes.clone(), false, None);
        let root = tempfile::tempdir().unwrap();
        let part = downloads_dir(root.path()).join("ds.tar.gz.part");
        std::fs::create_dir_all(part.parent().unwrap()).unwrap();
        std::fs::write(&part, b"stale bytes from another file").unwrap();
        fetch_archive(root.path(), "ds", &url, "ds.tar.gz", &md5, true, &mut |_, _| {}).unwrap();
        assert!(downloads_dir(root.path()).join("ds.tar.gz").exists(), "kept on request");
        let other = tempfile::tempdir().unwrap();
        let err = fetch_archive(other.path(), "ds", &url, "ds.tar.gz", &"0".repeat(32), false, &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("MD5") && err.contains(&md5) && err.contains(&"0".repeat(32)), "{err}");
        assert!(!downloads_dir(other.path()).join("ds.tar.gz.part").exists());
        assert!(!other.path().join("ds").exists());
    }

    #[test]
    fn without_network_the_error_names_the_url_and_where_to_put_the_files() {
        // Nothing listens on port 9 of localhost: the connection is refused at once.
        let root = tempfile::tempdir().unwrap();
        let err = fetch(
            Dataset::Cifar100,
            root.path(),
            Some("http://127.0.0.1:9/cifar-100-binary.tar.gz"),
            false,
            &mut |_, _| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("http://127.0.0.1:9/cifar-100-binary.tar.gz"), "{err}");
        assert!(err.contains(&root.path().join("cifar-100-binary").display().to_string()), "{err}");
        assert!(err.contains(".infomax-downloads/cifar-100-binary.tar.gz"), "{err}");
    }

    #[test]
    fn zip_archives_extract_like_tiny_imagenet() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("t.zip");
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        zip.add_directory("tiny/", opts).unwrap();
        zip.start_file("tiny/wnids.txt", opts).unwrap();
        zip.write_all(b"n01\n").unwrap();
        zip.finish().unwrap();
        let dest = extract_atomically(&path, root.path(), "tiny").unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("wnids.txt")).unwrap(), "n01\n");
    }

    #[test]
    fn an_archive_without_the_dataset_folder_leaves_nothing_behind() {
        let (bytes, _) = archive("other");
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("x.tar.gz");
        std::fs::write(&path, bytes).unwrap();
        let err = extract_atomically(&path, root.path(), "ds").unwrap_err().to_string();
        assert!(err.contains("no `ds/` folder"), "{err}");
        let names: Vec<String> =
            std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert_eq!(names, vec!["x.tar.gz".to_string()]);
    }

    #[test]
    fn a_torchvision_download_counts_as_present_and_nothing_is_fetched() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("cifar-10-batches-py")).unwrap();
        // Nothing listens on port 9: any download attempt would fail.
        let got = fetch(Dataset::Cifar10, root.path(), Some("http://127.0.0.1:9/x.tar.gz"), false, &mut |_, _| {});
        assert_eq!(got.unwrap(), Fetched::AlreadyPresent(root.path().join("cifar-10-batches-py")));
    }
}
