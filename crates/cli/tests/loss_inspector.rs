//! `infomax loss` on hand-computed embeddings: the value and terms it prints, the gradient files it
//! writes, and the errors it gives for bad input. Views are written here as plain NumPy `.npy`
//! files (format 1.0), independently of candle's writer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn infomax(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_infomax")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A little-endian float64 `.npy` of `rows`, as `numpy.save` writes it.
fn write_npy(dir: &Path, name: &str, rows: &[&[f64]]) -> PathBuf {
    let header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({}, {}), }}", rows.len(), rows[0].len());
    // Magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of 64
    // and ended by a newline.
    let unpadded = 10 + header.len() + 1;
    let header = format!("{header}{}\n", " ".repeat(unpadded.next_multiple_of(64) - unpadded));
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for v in rows.iter().flat_map(|r| r.iter()) {
        bytes.extend(v.to_le_bytes());
    }
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The float32 values of a `.npy` gradient file and its shape string.
fn read_f32_npy(path: &Path) -> (String, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = String::from_utf8_lossy(&bytes[10..10 + len]).to_string();
    assert!(header.contains("'<f4'"), "{header}");
    let values = bytes[10 + len..].chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    (header, values)
}

/// The VICReg case of `infomax_losses::vicreg`'s unit test, through the binary: A = [[0,0],[2,2]],
/// B = [[1,0],[1,2]] give invariance 0.5, variance 0.2475, covariance 4, loss 22.6875.
#[test]
fn vicreg_value_terms_and_gradients_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_npy(dir.path(), "a.npy", &[&[0.0, 0.0], &[2.0, 2.0]]);
    let b = write_npy(dir.path(), "b.npy", &[&[1.0, 0.0], &[1.0, 2.0]]);
    let grads = dir.path().join("grads");
    let out = infomax(&[
        "loss",
        "--method",
        "vicreg",
        "--views",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--json",
        "--grad-out",
        grads.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["method"], "vicreg");
    assert!((json["loss"].as_f64().unwrap() - 22.6875).abs() < 1e-9, "{json}");
    assert!((json["terms"]["invariance"].as_f64().unwrap() - 0.5).abs() < 1e-12);
    assert!((json["terms"]["covariance"].as_f64().unwrap() - 4.0).abs() < 1e-12);
    for i in 0..2 {
        let (header, values) = read_f32_npy(&grads.join(format!("grad_{i}.npy")));
        assert!(header.replace(' ', "").contains("'shape':(2,2"), "{header}");
        assert_eq!(values.len(), 4);
        assert!(values.iter().all(|v| v.is_finite()));
    }
    // ∂s/∂A = 2(A − B)/(N·D) = [[−0.5, 0], [0.5, 0]] times λ = 25, plus the covariance term
    // ∂c(A)/∂A: C(A) = [[2,2],[2,2]], off-diagonal gradient 2·2·C01/D·(∂C01/∂A).
    let (_, ga) = read_f32_npy(&grads.join("grad_0.npy"));
    let cov = |r: usize, c: usize| -> f64 {
        // C01 = Σ_n (a_n0 − ā0)(a_n1 − ā1)/(N − 1); ∂C01/∂a_n0 = (a_n1 − ā1), ∂/∂a_n1 = (a_n0 − ā0).
        let centred = [[-1.0, -1.0], [1.0, 1.0]];
        2.0 * 2.0 * 2.0 / 2.0 * centred[r][1 - c]
    };
    let inv = [[-12.5, 0.0], [12.5, 0.0]];
    for r in 0..2 {
        for c in 0..2 {
            let want = inv[r][c] + cov(r, c);
            assert!((ga[r * 2 + c] as f64 - want).abs() < 1e-5, "dA[{r}][{c}] = {} vs {want}", ga[r * 2 + c]);
        }
    }
}

#[test]
fn byol_target_gradient_is_zero_and_wmse_whole_batch_is_permutation_free() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<Vec<f64>> =
        (0..8).map(|i| (0..3).map(|j| (((i * 3 + j) * (i * 3 + j)) as f64 * 0.7).sin()).collect()).collect();
    let refs: Vec<&[f64]> = rows.iter().map(|r| r.as_slice()).collect();
    let p = write_npy(dir.path(), "p.npy", &refs);
    let shifted: Vec<Vec<f64>> = rows.iter().map(|r| r.iter().map(|x| x * 1.5 + 0.2).rev().collect()).collect();
    let srefs: Vec<&[f64]> = shifted.iter().map(|r| r.as_slice()).collect();
    let z = write_npy(dir.path(), "z.npy", &srefs);
    let grads = dir.path().join("g");
    let (ps, zs) = (p.to_str().unwrap(), z.to_str().unwrap());
    let out = infomax(&["loss", "--method", "byol", "--views", ps, zs, "--grad-out", grads.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let (_, gz) = read_f32_npy(&grads.join("grad_1.npy"));
    assert!(gz.iter().all(|&v| v == 0.0));
    // W-MSE over the whole batch: the seed (which permutes rows) cannot change the value.
    let value = |seed: &str| -> f64 {
        let out =
            infomax(&["loss", "--method", "w-mse", "--views", ps, zs, "--set", &format!("seed={seed}"), "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["loss"].as_f64().unwrap()
    };
    assert!((value("1") - value("2")).abs() < 1e-12);
}

#[test]
fn bad_input_names_the_file_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_npy(dir.path(), "a.npy", &[&[0.0, 1.0], &[2.0, 2.0], &[1.0, 0.0]]);
    let b = write_npy(dir.path(), "b3.npy", &[&[0.0, 1.0, 3.0], &[2.0, 2.0, 1.0], &[1.0, 0.0, 0.0]]);
    let one = write_npy(dir.path(), "one.npy", &[&[0.0, 1.0]]);
    let (a, b, one) = (a.to_str().unwrap(), b.to_str().unwrap(), one.to_str().unwrap());
    let cases: &[(&[&str], &str)] = &[
        (&["--method", "simclr", "--views", a, b], "b3.npy"),
        (&["--method", "simclr", "--views", one, one], "N ≥ 2"),
        (&["--method", "simclr", "--views", a, "nope.npy"], "nope.npy"),
        (&["--method", "simclr", "--views", a, a, "--set", "temperature=1"], "valid keys: tau"),
        (&["--method", "w-mse", "--views", a, a, "--set", "w_size=2"], "divide"),
        (&["--method", "w-mse", "--views", b, b, "--set", "w_size=3"], "w_size ≈ 2 × emb"),
        (&["--method", "barlow-twins", "--views", a, a, "--set", "lambda=abc"], "a number expected"),
        (&["--method", "dino", "--views", a, a], "barlow-twins"),
    ];
    for (args, expected) in cases {
        let mut full = vec!["loss"];
        full.extend_from_slice(args);
        let out = infomax(&full);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(text(&out).contains(expected), "{args:?}: {}", text(&out));
    }
}
