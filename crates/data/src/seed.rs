//! Seeds derived from (run seed, purpose, epoch, index), never from a shared global generator,
//! so that a resumed run and a run on another thread count draw the same numbers.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a random stream is used for; part of every derived seed so streams never collide.
/// (Parameter initialisation has its own per-name streams: `infomax_model::SeededVarMap`.)
/// The values are part of every stored run's randomness: never renumber them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Purpose {
    /// The per-epoch shuffle of the training set.
    Shuffle = 2,
    /// The augmentation of one view of one image (index = image index, sub = view).
    Augment = 3,
    /// W-MSE's sub-batch permutations of one step (epoch, index = step within the epoch).
    Whiten = 4,
    /// The linear probe's initialisation (epoch 0) and mini-batch order (epoch = probe epoch),
    /// index = the evaluated training epoch.
    Probe = 5,
}

/// SplitMix64's finaliser: a bijective mix with good avalanche, enough to separate streams.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed for one (run seed, purpose, epoch, index, sub) coordinate.
pub fn derive_seed(run_seed: u64, purpose: Purpose, epoch: u64, index: u64, sub: u64) -> u64 {
    let mut h = mix(run_seed);
    for part in [purpose as u64, epoch, index, sub] {
        h = mix(h ^ part);
    }
    h
}

/// A ChaCha8 generator for one coordinate (ChaCha's output is stable across crate versions).
pub fn rng_for(run_seed: u64, purpose: Purpose, epoch: u64, index: u64, sub: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(derive_seed(run_seed, purpose, epoch, index, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_by_every_coordinate() {
        let base = derive_seed(1, Purpose::Augment, 2, 3, 0);
        assert_eq!(base, derive_seed(1, Purpose::Augment, 2, 3, 0));
        assert_ne!(base, derive_seed(2, Purpose::Augment, 2, 3, 0));
        assert_ne!(base, derive_seed(1, Purpose::Shuffle, 2, 3, 0));
        assert_ne!(base, derive_seed(1, Purpose::Augment, 3, 3, 0));
        assert_ne!(base, derive_seed(1, Purpose::Augment, 2, 4, 0));
        assert_ne!(base, derive_seed(1, Purpose::Augment, 2, 3, 1));
    }
}
