//! Evaluation on frozen encoder features (evaluation-mode BN, un-augmented images):
//! k-NN as in the W-MSE code (k = 5, Euclidean, unweighted majority, ties to the smallest label)
//! and as in InstDisc / solo-learn / lightly (k = 200, cosine, votes weighted by exp(sim / 0.1)).

use candle_core::{Device, Tensor};
use infomax_data::augment::Augment;
use infomax_data::views::plain_batch;
use infomax_data::{Images, Label};
use rayon::prelude::*;

use crate::method::Network;
use crate::Result;

/// Row-major `rows × dim` features with their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub dim: usize,
    pub data: Vec<f32>,
    pub labels: Vec<Label>,
}

impl Features {
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Each row scaled to unit length (zero rows stay zero).
    pub fn l2_normalised(&self) -> Features {
        let mut data = self.data.clone();
        data.par_chunks_mut(self.dim).for_each(|r| {
            let n = r.iter().map(|v| v * v).sum::<f32>().sqrt();
            if n > 0.0 {
                r.iter_mut().for_each(|v| *v /= n);
            }
        });
        Features { dim: self.dim, data, labels: self.labels.clone() }
    }
}

/// Encoder features of `set`'s images `indices`, `batch_size` at a time; `tick` after each batch.
pub fn extract_features(
    net: &Network,
    set: &Images,
    indices: &[usize],
    augment: &Augment,
    batch_size: usize,
    device: &Device,
    mut tick: impl FnMut(usize),
) -> Result<Features> {
    let dim = net.online.encoder.output_dim();
    let mut data = Vec::with_capacity(indices.len() * dim);
    for chunk in indices.chunks(batch_size) {
        let pixels = plain_batch(set, chunk, augment)?;
        // Images read from their files have no stored side: validation requires an `eval_crop`.
        let side = augment.eval_size(set.stored_side().unwrap_or(0));
        let x = Tensor::from_vec(pixels, (chunk.len(), 3, side, side), device)?;
        let f = net.features(&x)?.flatten_all()?.to_vec1::<f32>()?;
        data.extend_from_slice(&f);
        tick(chunk.len());
    }
    Ok(Features { dim, data, labels: indices.iter().map(|&i| set.labels()[i]).collect() })
}

/// Top-1 and top-5 accuracy in percent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accuracy {
    pub top1: f64,
    pub top5: f64,
}

/// For each query row, its `k` best bank rows by score (higher is better; ties to the lower
/// index), with their scores. Scores come from one matrix product per block of queries.
fn nearest(
    bank: &Features,
    queries: &Features,
    k: usize,
    score: impl Fn(f32, usize) -> f32 + Sync,
) -> Result<Vec<Vec<(usize, f32)>>> {
    let dev = Device::Cpu;
    let b = Tensor::from_slice(&bank.data, (bank.rows(), bank.dim), &dev)?.t()?;
    let k = k.min(bank.rows());
    let mut out = Vec::with_capacity(queries.rows());
    for start in (0..queries.rows()).step_by(1024) {
        let end = (start + 1024).min(queries.rows());
        let q = Tensor::from_slice(
            &queries.data[start * queries.dim..end * queries.dim],
            (end - start, queries.dim),
            &dev,
        )?;
        let dots = q.matmul(&b)?.flatten_all()?.to_vec1::<f32>()?;
        let block: Vec<Vec<(usize, f32)>> = dots
            .par_chunks(bank.rows())
            .map(|row| {
                let mut scored: Vec<(usize, f32)> = row.iter().enumerate().map(|(j, &d)| (j, score(d, j))).collect();
                let cmp = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
                if k < scored.len() {
                    scored.select_nth_unstable_by(k - 1, cmp);
                }
                // Only the k best are kept, in a vector of their own size: a truncated one keeps
                // the whole bank's capacity (800 KB a query on CIFAR-10), 8 GB over a test set.
                let mut best = scored[..k].to_vec();
                best.sort_by(cmp);
                best
            })
            .collect();
        out.extend(block);
    }
    Ok(out)
}

/// Classes ranked by score, highest first, ties to the smallest label.
fn ranked_classes(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
}

fn accuracy(rankings: &[Vec<usize>], labels: &[Label]) -> Accuracy {
    let n = labels.len().max(1) as f64;
    let top1 = rankings.iter().zip(labels).filter(|(r, &l)| r[0] == l as usize).count() as f64;
    let top5 = rankings.iter().zip(labels).filter(|(r, &l)| r.iter().take(5).any(|&c| c == l as usize)).count() as f64;
    Accuracy { top1: 100.0 * top1 / n, top5: 100.0 * top5 / n }
}

/// k-NN with Euclidean distance on raw features and an unweighted majority vote (W-MSE).
pub fn knn_euclidean_majority(bank: &Features, queries: &Features, k: usize, classes: usize) -> Result<Accuracy> {
    // argmin ‖q − b‖² = argmax (2 q·b − ‖b‖²): the query's own norm is the same for every b.
    let bank_sq: Vec<f32> = (0..bank.rows()).map(|j| bank.row(j).iter().map(|v| v * v).sum()).collect();
    let neighbours = nearest(bank, queries, k, |dot, j| 2.0 * dot - bank_sq[j])?;
    let rankings: Vec<Vec<usize>> = neighbours
        .iter()
        .map(|nn| {
            let mut votes = vec![0.0; classes];
            nn.iter().for_each(|&(j, _)| votes[bank.labels[j] as usize] += 1.0);
            ranked_classes(&votes)
        })
        .collect();
    Ok(accuracy(&rankings, &queries.labels))
}

/// k-NN with cosine similarity, votes weighted by `exp(sim / temperature)` (InstDisc protocol).
pub fn knn_cosine_weighted(
    bank: &Features,
    queries: &Features,
    k: usize,
    temperature: f64,
    classes: usize,
) -> Result<Accuracy> {
    let (bank, queries) = (bank.l2_normalised(), queries.l2_normalised());
    let neighbours = nearest(&bank, &queries, k, |dot, _| dot)?;
    let rankings: Vec<Vec<usize>> = neighbours
        .iter()
        .map(|nn| {
            let mut votes = vec![0.0; classes];
            for &(j, sim) in nn {
                votes[bank.labels[j] as usize] += (sim as f64 / temperature).exp();
            }
            ranked_classes(&votes)
        })
        .collect();
    Ok(accuracy(&rankings, &queries.labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feats(rows: &[(&[f32], u8)]) -> Features {
        Features {
            dim: rows[0].0.len(),
            data: rows.iter().flat_map(|r| r.0.iter().copied()).collect(),
            labels: rows.iter().map(|r| Label::from(r.1)).collect(),
        }
    }

    #[test]
    fn euclidean_majority_by_hand() {
        // Bank on a line: class 0 at 0, 1, 2; class 1 at 10, 11; class 2 at 20.
        let bank = feats(&[(&[0.0], 0), (&[1.0], 0), (&[2.0], 0), (&[10.0], 1), (&[11.0], 1), (&[20.0], 2)]);
        // 3-NN of 1.5: 1, 2, 0 → class 0. 3-NN of 10.4: 10, 11, 2 → class 1 (2 votes).
        // 3-NN of 16: 20 (d 4), 11 (5), 10 (6) → class 1 with 2 votes; class 2 second.
        let q = feats(&[(&[1.5], 0), (&[10.4], 1), (&[16.0], 2)]);
        let acc = knn_euclidean_majority(&bank, &q, 3, 3).unwrap();
        assert!((acc.top1 - 200.0 / 3.0).abs() < 1e-9, "{acc:?}");
        assert_eq!(acc.top5, 100.0);
    }

    #[test]
    fn majority_ties_go_to_the_smallest_label() {
        let bank = feats(&[(&[1.0], 1), (&[-1.0], 0)]);
        let q = feats(&[(&[0.0], 0)]);
        assert_eq!(knn_euclidean_majority(&bank, &q, 2, 2).unwrap().top1, 100.0);
    }

    #[test]
    fn cosine_weighting_prefers_close_neighbours() {
        // Query along x. One class-1 neighbour exactly along x (sim 1), two class-0 ones at
        // 60° (sim 0.5): weights e^10 vs 2·e^5, so class 1 wins although outnumbered.
        let s = 3f32.sqrt() / 2.0;
        let bank = feats(&[(&[2.0, 0.0], 1), (&[0.5, s], 0), (&[0.5, -s], 0)]);
        let q = feats(&[(&[3.0, 0.0], 1)]);
        assert_eq!(knn_cosine_weighted(&bank, &q, 3, 0.1, 2).unwrap().top1, 100.0);
        // Unweighted majority would say class 0.
        let q0 = feats(&[(&[1.0, 0.0], 1)]);
        assert_eq!(knn_euclidean_majority(&bank, &q0, 3, 2).unwrap().top1, 0.0);
    }

    #[test]
    fn large_random_case_agrees_with_brute_force() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mk = |rng: &mut rand_chacha::ChaCha8Rng, n: usize| Features {
            dim: 8,
            data: (0..n * 8).map(|_| rng.random_range(-1.0..1.0)).collect(),
            labels: (0..n).map(|_| rng.random_range(0..4)).collect(),
        };
        let bank = mk(&mut rng, 300);
        let q = mk(&mut rng, 50);
        let fast = knn_euclidean_majority(&bank, &q, 5, 4).unwrap();
        let mut correct = 0;
        for i in 0..q.rows() {
            let mut d: Vec<(f32, usize)> = (0..bank.rows())
                .map(|j| (q.row(i).iter().zip(bank.row(j)).map(|(a, b)| (a - b) * (a - b)).sum(), j))
                .collect();
            d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut votes = [0usize; 4];
            d.iter().take(5).for_each(|&(_, j)| votes[bank.labels[j] as usize] += 1);
            let best = (0..4).max_by(|&a, &b| votes[a].cmp(&votes[b]).then(b.cmp(&a))).unwrap();
            correct += (best == q.labels[i] as usize) as usize;
        }
        assert!((fast.top1 - 100.0 * correct as f64 / 50.0).abs() < 1e-9);
    }
}
