//! Records the git revision the binary was built from (or `unknown`), for manifests; with
//! the `cuda` feature, compiles the engine's CUDA kernels to PTX with nvcc (`NVCC`, else
//! `$CUDA_HOME/bin/nvcc`, else `nvcc` on the PATH) for `CUDA_COMPUTE_CAP` (default 70; the
//! driver compiles the PTX for newer GPUs when it loads it).
fn main() {
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=STEREOSCOPE_GIT_REV={rev}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        compile_kernels();
    }
}

fn compile_kernels() {
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| match std::env::var("CUDA_HOME") {
        Ok(home) => format!("{home}/bin/nvcc"),
        Err(_) => "nvcc".into(),
    });
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "70".into());
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    for name in ["mlx_dequant", "fused"] {
        let src = format!("src/engine/kernels/{name}.cu");
        println!("cargo:rerun-if-changed={src}");
        let out = out_dir.join(format!("{name}.ptx"));
        let status = std::process::Command::new(&nvcc)
            .args(["--ptx", "-O3", &format!("-arch=compute_{cap}"), "-o"])
            .arg(&out)
            .arg(&src)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("{nvcc} failed on {src} ({s})"),
            Err(e) => panic!("the cuda feature needs nvcc to compile {src}: {nvcc}: {e}"),
        }
    }
}
