//! The piece layer: the BLAKE3 chaining value of every 16 KiB group of a blob.
//!
//! BLAKE3 is a Merkle tree over 1 KiB chunks. The chaining values of the 16 KiB subtrees (BitTorrent v2 calls
//! this row a "piece layer") hash up to the blob's root hash, so a peer that holds the layer can check each
//! 16 KiB group on its own, in any order, from any peer: exactly what a multi-source swarm needs. The layer is
//! 32 bytes per group (0.2% of the blob); it travels once, checked against the root, before any data.
//!
//! A blob of one group or less has an empty layer: its single group is the root and is checked with
//! [`blake3::hash`].

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

use crate::hash::Hash;

/// Bytes in a group: the unit of verification, storage bitfields and requests.
pub const GROUP_SIZE: u64 = 16 * 1024;

/// Number of groups of a blob of `size` bytes (an empty blob has none).
pub fn group_count(size: u64) -> u64 {
    size.div_ceil(GROUP_SIZE)
}

/// Byte length of group `group` of a blob of `size` bytes.
pub fn group_len(size: u64, group: u64) -> usize {
    let start = group * GROUP_SIZE;
    (size.saturating_sub(start)).min(GROUP_SIZE) as usize
}

/// Chaining value of group `group` (never the root: only for blobs of more than one group).
pub fn group_cv(group: u64, data: &[u8]) -> ChainingValue {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(group * GROUP_SIZE);
    hasher.update(data);
    hasher.finalize_non_root()
}

/// The piece layer of a blob: one chaining value per group, or none for a blob of at most one group.
#[derive(Clone, PartialEq, Eq)]
pub struct Layer {
    size: u64,
    cvs: Vec<ChainingValue>,
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layer")
            .field("size", &self.size)
            .field("cvs", &self.cvs.len())
            .finish()
    }
}

/// Builds a layer (and the root hash) from the bytes of a blob fed in order, in pieces of any size.
///
/// Every byte is hashed once: the root is merged from the groups' chaining values.
#[derive(Debug)]
pub struct LayerBuilder {
    group: Vec<u8>,
    cvs: Vec<ChainingValue>,
    size: u64,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        LayerBuilder {
            group: Vec::with_capacity(GROUP_SIZE as usize),
            cvs: Vec::new(),
            size: 0,
        }
    }
}

impl LayerBuilder {
    /// Feeds the next bytes of the blob.
    pub fn update(&mut self, mut data: &[u8]) {
        self.size += data.len() as u64;
        while !data.is_empty() {
            if self.group.is_empty() && data.len() > GROUP_SIZE as usize {
                // Whole groups straight from the input, without a copy.
                let index = self.cvs.len() as u64;
                self.cvs.push(group_cv(index, &data[..GROUP_SIZE as usize]));
                data = &data[GROUP_SIZE as usize..];
                continue;
            }
            let take = (GROUP_SIZE as usize - self.group.len()).min(data.len());
            self.group.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.group.len() == GROUP_SIZE as usize && !data.is_empty() {
                let index = self.cvs.len() as u64;
                self.cvs.push(group_cv(index, &self.group));
                self.group.clear();
            }
        }
    }

    /// The root hash and the layer.
    pub fn finish(mut self) -> (Hash, Layer) {
        if self.size <= GROUP_SIZE {
            // The only group is the whole blob, hashed as the root.
            return (Hash::of(&self.group), Layer::empty(self.size));
        }
        let index = self.cvs.len() as u64;
        self.cvs.push(group_cv(index, &self.group));
        Layer::from_cvs(self.size, self.cvs)
    }
}

/// Why a layer or a group was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayerError {
    /// The layer does not have one value per group.
    #[error("piece layer has {got} values, a blob of {size} bytes needs {want}")]
    WrongLength {
        /// Values received.
        got: usize,
        /// Values needed.
        want: u64,
        /// Blob size.
        size: u64,
    },
    /// The layer does not hash to the blob's name.
    #[error("piece layer does not hash to the blob's hash")]
    WrongRoot,
}

impl Layer {
    /// Hashes a whole blob held in memory.
    pub fn of(data: &[u8]) -> (Hash, Layer) {
        let mut builder = LayerBuilder::default();
        builder.update(data);
        builder.finish()
    }

    /// The layer of a blob of at most one group (it has no values).
    fn empty(size: u64) -> Layer {
        debug_assert!(size <= GROUP_SIZE);
        Layer {
            size,
            cvs: Vec::new(),
        }
    }

    /// The root hash and layer of a blob of more than one group, from its groups' chaining values
    /// computed in any order (e.g. by several threads).
    ///
    /// # Panics
    /// If `size` is at most one group or `cvs` does not have one value per group.
    pub fn from_cvs(size: u64, cvs: Vec<ChainingValue>) -> (Hash, Layer) {
        assert!(size > GROUP_SIZE, "a blob of one group has no layer");
        assert_eq!(cvs.len() as u64, group_count(size), "one value per group");
        let layer = Layer { size, cvs };
        (layer.root(), layer)
    }

    /// A layer received from a peer, accepted only if it hashes to `root` for a blob of `size` bytes.
    ///
    /// The root does not pin the size within the last group: the size is proven only once the last group
    /// checks against the layer.
    pub fn verified(root: &Hash, size: u64, cvs: Vec<ChainingValue>) -> Result<Layer, LayerError> {
        let want = if size > GROUP_SIZE {
            group_count(size)
        } else {
            0
        };
        if cvs.len() as u64 != want {
            return Err(LayerError::WrongLength {
                got: cvs.len(),
                want,
                size,
            });
        }
        let layer = Layer { size, cvs };
        if size > GROUP_SIZE && layer.root() != *root {
            return Err(LayerError::WrongRoot);
        }
        Ok(layer)
    }

    /// A layer read back from our own store (checked when it was first accepted).
    pub fn from_trusted_bytes(size: u64, bytes: &[u8]) -> Option<Layer> {
        let want = if size > GROUP_SIZE {
            group_count(size) as usize
        } else {
            0
        };
        if bytes.len() != want * 32 {
            return None;
        }
        let cvs = bytes
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32-byte chunks"))
            .collect();
        Some(Layer { size, cvs })
    }

    /// The layer as bytes (32 per group), as stored and sent.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.cvs.concat()
    }

    /// The chaining values.
    pub fn cvs(&self) -> &[ChainingValue] {
        &self.cvs
    }

    /// Size of the blob in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of groups in the blob.
    pub fn groups(&self) -> u64 {
        group_count(self.size)
    }

    /// Whether `data` is group `group` of the blob named `root`.
    pub fn check_group(&self, root: &Hash, group: u64, data: &[u8]) -> bool {
        if group >= self.groups() || data.len() != group_len(self.size, group) {
            return false;
        }
        if self.size <= GROUP_SIZE {
            return Hash::of(data) == *root;
        }
        group_cv(group, data) == self.cvs[group as usize]
    }

    /// The root hash the layer stands for (blobs of more than one group).
    fn root(&self) -> Hash {
        Hash(*merge(&self.cvs, self.size, true).as_bytes())
    }
}

/// Merges the chaining values of the groups covering `len` bytes into their subtree's value.
fn merge(cvs: &[ChainingValue], len: u64, is_root: bool) -> blake3::Hash {
    if len <= GROUP_SIZE {
        return blake3::Hash::from(cvs[0]);
    }
    let left_len = left_subtree_len(len);
    let left_groups = (left_len / GROUP_SIZE) as usize;
    let left = merge(&cvs[..left_groups], left_len, false);
    let right = merge(&cvs[left_groups..], len - left_len, false);
    if is_root {
        merge_subtrees_root(left.as_bytes(), right.as_bytes(), Mode::Hash)
    } else {
        blake3::Hash::from(merge_subtrees_non_root(
            left.as_bytes(),
            right.as_bytes(),
            Mode::Hash,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 1000) as u8).collect()
    }

    #[test]
    fn layer_hashes_to_the_blake3_root_for_every_shape() {
        let g = GROUP_SIZE as usize;
        for len in [
            0,
            1,
            1024,
            g - 1,
            g,
            g + 1,
            2 * g,
            3 * g + 5,
            7 * g,
            8 * g,
            9 * g + 1,
            33 * g - 3,
        ] {
            let bytes = data(len);
            let (root, layer) = Layer::of(&bytes);
            assert_eq!(root, Hash::of(&bytes), "len {len}");
            let again = Layer::verified(&root, len as u64, layer.cvs().to_vec()).expect("verifies");
            assert_eq!(again, layer);
            for group in 0..group_count(len as u64) {
                let start = group as usize * g;
                let end = (start + g).min(len);
                assert!(
                    layer.check_group(&root, group, &bytes[start..end]),
                    "len {len} group {group}"
                );
                let mut bad = bytes[start..end].to_vec();
                bad[0] ^= 1;
                assert!(!layer.check_group(&root, group, &bad));
            }
        }
    }

    #[test]
    fn builder_accepts_any_split() {
        let bytes = data(5 * GROUP_SIZE as usize + 333);
        let whole = Layer::of(&bytes);
        for step in [1, 1000, 16384, 16385, 50_000] {
            let mut builder = LayerBuilder::default();
            for piece in bytes.chunks(step) {
                builder.update(piece);
            }
            assert_eq!(builder.finish(), whole, "step {step}");
        }
    }

    #[test]
    fn a_forged_layer_is_refused() {
        let bytes = data(4 * GROUP_SIZE as usize);
        let (root, layer) = Layer::of(&bytes);
        let mut cvs = layer.cvs().to_vec();
        cvs[2][0] ^= 1;
        assert_eq!(
            Layer::verified(&root, bytes.len() as u64, cvs),
            Err(LayerError::WrongRoot)
        );
        let short = layer.cvs()[..3].to_vec();
        assert!(matches!(
            Layer::verified(&root, bytes.len() as u64, short),
            Err(LayerError::WrongLength { .. })
        ));
        // The root does not fix the size within the last group: a layer claimed for one byte less passes,
        // but then its last group can never check, which is why a download proves the size with the last
        // group before trusting a layer.
        let lying = Layer::verified(&root, bytes.len() as u64 - 1, layer.cvs().to_vec()).unwrap();
        let last = &bytes[3 * GROUP_SIZE as usize..];
        assert!(!lying.check_group(&root, 3, &last[..last.len() - 1]));
        assert!(layer.check_group(&root, 3, last));
    }
}
