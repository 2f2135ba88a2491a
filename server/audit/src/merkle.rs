//! Each tenant's seal chain as the leaf sequence of an RFC 6962 Merkle tree.
//!
//! Leaf `i` is seal `i` of the tenant; its leaf data is the seal's chain hash (32 bytes),
//! which already commits to the seal's body and to every seal before it. Hashing is RFC
//! 6962's (`SHA-256(0x00 ‖ leaf)`, `SHA-256(0x01 ‖ left ‖ right)`); proofs are the Go
//! sumdb/tlog algorithms as ported by Cloudflare's `tlog_tiles`, which we use rather than
//! write. The tree is held in memory as tlog's stored hashes (two per leaf, about 64 bytes
//! per seal: a million seals take some 64 MiB) and grows by [`Tree::push`]; the server
//! keeps one per tenant between requests (see `transparency`), so a proof costs a read of
//! the seals added since, not the whole tree.

use tlog_tiles::{HashReader, RecordProof, TreeProof};

use crate::canonical::Hash;

/// Why a proof was not produced or did not check out.
#[derive(Debug, thiserror::Error)]
pub enum MerkleError {
    /// The index or size asked for is not in the tree.
    #[error("{what} {value} is outside a tree of {size} leaves")]
    OutOfRange {
        /// What was asked for.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The tree's size.
        size: u64,
    },
    /// The proof does not prove what it claims.
    #[error("invalid {0} proof")]
    Invalid(&'static str),
}

/// A Merkle tree held as tlog "stored hashes" (every complete subtree's hash, in the order
/// they become complete).
#[derive(Clone, Debug, Default)]
pub struct Tree {
    stored: Vec<tlog_tiles::Hash>,
    size: u64,
}

impl HashReader for Tree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog_tiles::Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                self.stored
                    .get(i as usize)
                    .copied()
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

fn t(h: &Hash) -> tlog_tiles::Hash {
    tlog_tiles::Hash(*h.as_bytes())
}

fn c(h: tlog_tiles::Hash) -> Hash {
    Hash(h.0)
}

/// `SHA-256(0x00 ‖ seal_hash)`: the RFC 6962 leaf hash of a seal.
pub fn leaf_hash(seal_hash: &Hash) -> Hash {
    c(tlog_tiles::record_hash(seal_hash.as_bytes()))
}

impl Tree {
    /// A tree over these seal hashes, in seal order.
    pub fn from_seal_hashes<'a>(seals: impl IntoIterator<Item = &'a Hash>) -> Tree {
        let mut tree = Tree::default();
        for s in seals {
            tree.push(s);
        }
        tree
    }

    /// Appends seal `self.size()`.
    pub fn push(&mut self, seal_hash: &Hash) {
        let leaf = tlog_tiles::record_hash(seal_hash.as_bytes());
        let new = tlog_tiles::stored_hashes_for_record_hash(self.size, leaf, &*self)
            .expect("a tree reads only hashes it stored");
        self.stored.extend(new);
        self.size += 1;
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The RFC 6962 leaf hash of leaf `index` (see [`leaf_hash`]), if the tree has it.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        if index >= self.size {
            return None;
        }
        self.stored
            .get(tlog_tiles::stored_hash_index(0, index) as usize)
            .copied()
            .map(c)
    }

    /// Root hash of the first `n` leaves (RFC 6962 `MTH`).
    pub fn root(&self, n: u64) -> Result<Hash, MerkleError> {
        self.in_range("tree size", n, true)?;
        tlog_tiles::tree_hash(n, self)
            .map(c)
            .map_err(|_| MerkleError::Invalid("tree"))
    }

    /// Inclusion proof of leaf `index` in the tree of the first `size` leaves.
    pub fn inclusion(&self, index: u64, size: u64) -> Result<Vec<Hash>, MerkleError> {
        self.in_range("tree size", size, true)?;
        if index >= size {
            return Err(MerkleError::OutOfRange {
                what: "leaf",
                value: index,
                size,
            });
        }
        tlog_tiles::prove_record(size, index, self)
            .map(|p| p.into_iter().map(c).collect())
            .map_err(|_| MerkleError::Invalid("inclusion"))
    }

    /// Consistency proof from the tree of `old` leaves to the tree of `new` leaves.
    pub fn consistency(&self, old: u64, new: u64) -> Result<Vec<Hash>, MerkleError> {
        self.in_range("tree size", new, true)?;
        if old > new {
            return Err(MerkleError::OutOfRange {
                what: "old tree size",
                value: old,
                size: new,
            });
        }
        // Every tree extends the empty one; RFC 6962 gives no proof for it.
        if old == 0 {
            return Ok(vec![]);
        }
        tlog_tiles::prove_tree(new, old, self)
            .map(|p| p.into_iter().map(c).collect())
            .map_err(|_| MerkleError::Invalid("consistency"))
    }

    fn in_range(&self, what: &'static str, n: u64, inclusive: bool) -> Result<(), MerkleError> {
        if n > self.size || (!inclusive && n == self.size) {
            return Err(MerkleError::OutOfRange {
                what,
                value: n,
                size: self.size,
            });
        }
        Ok(())
    }
}

/// Checks that `proof` shows the seal with hash `seal_hash` at `index` in the tree of
/// `size` leaves whose root is `root`.
pub fn check_inclusion(
    proof: &[Hash],
    size: u64,
    root: &Hash,
    index: u64,
    seal_hash: &Hash,
) -> Result<(), MerkleError> {
    if index >= size {
        return Err(MerkleError::OutOfRange {
            what: "leaf",
            value: index,
            size,
        });
    }
    let p: RecordProof = proof.iter().map(t).collect();
    tlog_tiles::check_record(&p, size, t(root), index, t(&leaf_hash(seal_hash)))
        .map_err(|_| MerkleError::Invalid("inclusion"))
}

/// Checks that `proof` shows the tree of `old_size` leaves with root `old_root` to be a
/// prefix of the tree of `new_size` leaves with root `new_root`.
pub fn check_consistency(
    proof: &[Hash],
    old_size: u64,
    old_root: &Hash,
    new_size: u64,
    new_root: &Hash,
) -> Result<(), MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::OutOfRange {
            what: "old tree size",
            value: old_size,
            size: new_size,
        });
    }
    if old_size == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(MerkleError::Invalid("consistency"))
        };
    }
    let p: TreeProof = proof.iter().map(t).collect();
    tlog_tiles::check_tree(&p, new_size, t(new_root), old_size, t(old_root))
        .map_err(|_| MerkleError::Invalid("consistency"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn seal(i: u64) -> Hash {
        Hash(Sha256::digest(i.to_be_bytes()).into())
    }

    /// RFC 6962 §2.1 computed directly, to check the library's tree against the spec.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => Hash(Sha256::digest([]).into()),
            1 => leaf_hash(&leaves[0]),
            n => {
                let k = n.next_power_of_two() / 2;
                let mut h = Sha256::new();
                h.update([1u8]);
                h.update(mth(&leaves[..k]).as_bytes());
                h.update(mth(&leaves[k..]).as_bytes());
                Hash(h.finalize().into())
            }
        }
    }

    #[test]
    fn roots_are_rfc6962_and_proofs_check() {
        let leaves: Vec<Hash> = (0..37).map(seal).collect();
        let tree = Tree::from_seal_hashes(&leaves);
        for (i, l) in leaves.iter().enumerate() {
            assert_eq!(tree.leaf(i as u64), Some(leaf_hash(l)));
        }
        assert_eq!(tree.leaf(37), None);
        for n in 0..=37u64 {
            let root = tree.root(n).unwrap();
            assert_eq!(root, mth(&leaves[..n as usize]), "size {n}");
            for i in 0..n {
                let p = tree.inclusion(i, n).unwrap();
                check_inclusion(&p, n, &root, i, &leaves[i as usize]).unwrap();
                assert!(check_inclusion(&p, n, &root, i, &seal(99)).is_err());
            }
            for m in 0..=n {
                let p = tree.consistency(m, n).unwrap();
                let old = tree.root(m).unwrap();
                check_consistency(&p, m, &old, n, &root).unwrap();
                if m > 0 && m < n {
                    assert!(check_consistency(&p, m, &seal(1), n, &root).is_err());
                }
            }
        }
    }

    #[test]
    fn out_of_range_is_an_error_not_a_panic() {
        let tree = Tree::from_seal_hashes(&[seal(0), seal(1)]);
        assert!(tree.root(3).is_err());
        assert!(tree.inclusion(2, 2).is_err());
        assert!(tree.consistency(2, 1).is_err());
    }
}
