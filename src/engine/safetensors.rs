//! Reading a safetensors file one tensor at a time: the header (an 8-byte little-endian
//! length, then JSON naming each tensor's dtype, shape and byte range), then each tensor's
//! bytes read on their own, so loading holds the tensors and one tensor's bytes, never the
//! whole file beside them.

use crate::error::{Error, Result, brief};
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// A header larger than this is not a safetensors header (the format caps it at 100 MB).
const MAX_HEADER: u64 = 100_000_000;

#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

fn err(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Model(format!(
        "{}: cannot read safetensors: {what}",
        path.display()
    ))
}

fn dtype(name: &str) -> Option<(DType, usize)> {
    Some(match name {
        "BF16" => (DType::BF16, 2),
        "F16" => (DType::F16, 2),
        "F32" => (DType::F32, 4),
        "F64" => (DType::F64, 8),
        "U32" => (DType::U32, 4),
        "U8" => (DType::U8, 1),
        "I64" => (DType::I64, 8),
        _ => return None,
    })
}

/// Every tensor of the file by name, on the CPU.
pub fn load(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let mut f = std::fs::File::open(path).map_err(|e| err(path, e))?;
    let file_len = f.metadata().map_err(|e| err(path, e))?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| err(path, "shorter than its 8-byte header length"))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER || 8 + header_len > file_len {
        return Err(err(
            path,
            format!("header length {header_len} does not fit the file's {file_len} bytes"),
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header).map_err(|e| err(path, e))?;
    let mut entries: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| err(path, format!("header: {e}")))?;
    entries.remove("__metadata__");
    let data_start = 8 + header_len;
    let mut out = BTreeMap::new();
    for (name, v) in entries {
        let e: Entry =
            serde_json::from_value(v).map_err(|e| err(path, format!("tensor `{name}`: {e}")))?;
        let t = read_tensor(&mut f, path, &name, &e, data_start, file_len)?;
        out.insert(name, t);
    }
    Ok(out)
}

fn read_tensor(
    f: &mut std::fs::File,
    path: &Path,
    name: &str,
    e: &Entry,
    data_start: u64,
    file_len: u64,
) -> Result<Tensor> {
    let (dt, size) = dtype(&e.dtype).ok_or_else(|| {
        err(
            path,
            format!("tensor `{name}`: dtype {} is not supported", e.dtype),
        )
    })?;
    let [begin, end] = e.data_offsets;
    let elems: usize = e.shape.iter().product();
    if end < begin || (end - begin) as usize != elems * size {
        return Err(err(
            path,
            format!(
                "tensor `{name}`: bytes {begin}..{end} do not hold {:?} {}",
                e.shape, e.dtype
            ),
        ));
    }
    if data_start + end > file_len {
        return Err(err(
            path,
            format!(
                "truncated: tensor `{name}` ends at byte {} but the file has {file_len} bytes",
                data_start + end
            ),
        ));
    }
    let mut bytes = vec![0u8; (end - begin) as usize];
    f.seek(SeekFrom::Start(data_start + begin))
        .and_then(|_| f.read_exact(&mut bytes))
        .map_err(|e| err(path, format!("tensor `{name}`: {e}")))?;
    Tensor::from_raw_buffer(&bytes, dt, &e.shape, &Device::Cpu)
        .map_err(|e| err(path, format!("tensor `{name}`: {}", brief(&e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_candle_writes_and_names_a_truncated_tensor() {
        let dir = std::env::temp_dir().join(format!("stereoscope-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("m.safetensors");
        let a = Tensor::arange(0f32, 12.0, &Device::Cpu)
            .and_then(|t| t.reshape((3, 4)))
            .and_then(|t| t.to_dtype(DType::BF16))
            .expect("a");
        let b = Tensor::new(&[7u32, 8, 9], &Device::Cpu).expect("b");
        let c = Tensor::new(&[0.5f32, -1.5], &Device::Cpu).expect("c");
        let map: std::collections::HashMap<String, Tensor> = [
            ("a".to_string(), a.clone()),
            ("b".to_string(), b.clone()),
            ("c".to_string(), c.clone()),
        ]
        .into_iter()
        .collect();
        candle_core::safetensors::save(&map, &path).expect("save");
        let got = load(&path).expect("loads");
        assert_eq!(got.len(), 3);
        for (name, want) in [("a", &a), ("b", &b), ("c", &c)] {
            let t = &got[name];
            assert_eq!((t.dtype(), t.dims()), (want.dtype(), want.dims()), "{name}");
            let (x, y) = (
                t.to_dtype(DType::F64)
                    .and_then(|t| t.flatten_all())
                    .and_then(|t| t.to_vec1::<f64>()),
                want.to_dtype(DType::F64)
                    .and_then(|t| t.flatten_all())
                    .and_then(|t| t.to_vec1::<f64>()),
            );
            assert_eq!(x.expect("x"), y.expect("y"), "{name}");
        }
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() - 4]).expect("cut");
        let e = load(&path).expect_err("truncated").to_string();
        assert!(
            e.contains("m.safetensors") && e.contains("truncated: tensor"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
