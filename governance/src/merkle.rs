//! CCF's Merkle tree over ledger transactions, its roots and inclusion proofs.
//!
//! Hashing is CCF's (reference §12): a leaf is
//! `SHA-256(write_set_digest ‖ SHA-256(commit_evidence) ‖ claims_digest)` and an interior node is
//! `SHA-256(left ‖ right)` — no domain-separation prefixes, unlike RFC 6962.
//!
//! The *shape* is merklecpp's (`merklecpp.h`, `insert_leaf`/`continue_insertion_stack`): a new
//! leaf becomes the right sibling of the root when the root's tree is full, otherwise it descends
//! into the left child if that is not full, else into the right. The left child of every node is
//! therefore a perfect tree of the largest power of two below the node's size, which is exactly
//! RFC 6962's split (`k` = largest power of two `< n`); an odd node is carried up, never
//! duplicated. Receipts from encfs thus verify with CCF's own tools.
//!
//! Storage: `levels[h][i]` is the hash of the perfect, aligned block of leaves
//! `[i·2^h, (i+1)·2^h)`; appending a leaf completes at most one block per level, so appends cost
//! O(log n) hashes and the root or a proof for any past size costs O(log n) hashes too.

use aws_lc_rs::digest::{self, SHA256};

use crate::identity::{from_hex, hex};

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// SHA-256 of the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> Digest {
    let mut ctx = digest::Context::new(&SHA256);
    for part in parts {
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// An interior node: `SHA-256(left ‖ right)`.
pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    sha256(&[left, right])
}

/// A leaf: `SHA-256(write_set_digest ‖ SHA-256(commit_evidence) ‖ claims_digest)`.
pub fn leaf_hash(
    write_set_digest: &Digest,
    commit_evidence: &str,
    claims_digest: &Digest,
) -> Digest {
    sha256(&[
        write_set_digest,
        &sha256(&[commit_evidence.as_bytes()]),
        claims_digest,
    ])
}

/// Which side of the running hash a proof element sits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// `h = SHA-256(sibling ‖ h)`.
    Left,
    /// `h = SHA-256(h ‖ sibling)`.
    Right,
}

/// One step of an inclusion proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProofStep {
    /// The side of the sibling.
    pub side: Side,
    /// The sibling's hash.
    pub hash: Digest,
}

impl ProofStep {
    /// CCF's JSON form: `{"left": hex}` or `{"right": hex}`.
    pub fn to_json(&self) -> serde_json::Value {
        let key = match self.side {
            Side::Left => "left",
            Side::Right => "right",
        };
        serde_json::json!({ key: hex(&self.hash) })
    }

    /// Parses CCF's JSON form.
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        let object = value.as_object()?;
        if object.len() != 1 {
            return None;
        }
        let (key, value) = object.iter().next()?;
        let side = match key.as_str() {
            "left" => Side::Left,
            "right" => Side::Right,
            _ => return None,
        };
        let hash: Digest = from_hex(value.as_str()?)?.try_into().ok()?;
        Some(Self { side, hash })
    }
}

/// Folds a proof from a leaf up to the root it implies (CCF's `receipt.root`).
pub fn root_from_proof(leaf: &Digest, proof: &[ProofStep]) -> Digest {
    proof.iter().fold(*leaf, |h, step| match step.side {
        Side::Left => node_hash(&step.hash, &h),
        Side::Right => node_hash(&h, &step.hash),
    })
}

/// An append-only Merkle tree of leaf hashes.
#[derive(Clone, Debug, Default)]
pub struct MerkleTree {
    levels: Vec<Vec<Digest>>,
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Whether there are no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a leaf; returns its index.
    pub fn append(&mut self, leaf: Digest) -> u64 {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let index = self.len() - 1;
        let mut h = 0;
        while self.levels[h].len().is_multiple_of(2) {
            let n = self.levels[h].len();
            let parent = node_hash(&self.levels[h][n - 2], &self.levels[h][n - 1]);
            if self.levels.len() == h + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[h + 1].push(parent);
            h += 1;
        }
        index
    }

    /// The leaf at `index`.
    pub fn leaf(&self, index: u64) -> Option<Digest> {
        self.levels
            .first()?
            .get(usize::try_from(index).ok()?)
            .copied()
    }

    /// The hash of leaves `[start, start + size)`, a node of the tree over the first `n` leaves
    /// for some `n` (`start` is a multiple of the largest power of two `<= size`).
    fn range_hash(&self, start: u64, size: u64) -> Digest {
        if size.is_power_of_two() {
            let h = size.trailing_zeros() as usize;
            return self.levels[h][(start >> h) as usize];
        }
        let k = split_point(size);
        node_hash(
            &self.range_hash(start, k),
            &self.range_hash(start + k, size - k),
        )
    }

    /// The root of the tree over the first `size` leaves (`None` for `size` 0 or beyond `len`).
    pub fn root_at(&self, size: u64) -> Option<Digest> {
        (size >= 1 && size <= self.len()).then(|| self.range_hash(0, size))
    }

    /// The root of the whole tree (`None` when empty).
    pub fn root(&self) -> Option<Digest> {
        self.root_at(self.len())
    }

    /// The inclusion proof of leaf `index` in the tree over the first `size` leaves, leaf first
    /// (`None` unless `index < size <= len`).
    pub fn proof(&self, index: u64, size: u64) -> Option<Vec<ProofStep>> {
        if index >= size || size > self.len() {
            return None;
        }
        let mut steps = Vec::new();
        let (mut start, mut n, mut i) = (0u64, size, index);
        // Walk down from the root, collecting siblings; reverse at the end (leaf first).
        while n > 1 {
            let k = split_point(n);
            if i < k {
                steps.push(ProofStep {
                    side: Side::Right,
                    hash: self.range_hash(start + k, n - k),
                });
                n = k;
            } else {
                steps.push(ProofStep {
                    side: Side::Left,
                    hash: self.range_hash(start, k),
                });
                start += k;
                i -= k;
                n -= k;
            }
        }
        steps.reverse();
        Some(steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference model 1: RFC 6962's recursive definition (largest power of two on the left).
    fn model_root(leaves: &[Digest]) -> Digest {
        if leaves.len() == 1 {
            return leaves[0];
        }
        let k = split_point(leaves.len() as u64) as usize;
        node_hash(&model_root(&leaves[..k]), &model_root(&leaves[k..]))
    }

    /// Reference model 2: merklecpp's insertion, node by node (a full subtree gets a new
    /// parent; otherwise descend left if the left is not full, else right).
    enum Node {
        Leaf(Digest),
        Inner(Box<Node>, Box<Node>, usize),
    }
    impl Node {
        fn size(&self) -> usize {
            match self {
                Node::Leaf(_) => 1,
                Node::Inner(_, _, s) => *s,
            }
        }
        fn is_full(&self) -> bool {
            self.size().is_power_of_two()
                && match self {
                    Node::Leaf(_) => true,
                    Node::Inner(l, r, _) => l.is_full() && r.is_full() && l.size() == r.size(),
                }
        }
        fn insert(self, leaf: Digest) -> Node {
            if self.is_full() {
                let s = self.size() + 1;
                return Node::Inner(Box::new(self), Box::new(Node::Leaf(leaf)), s);
            }
            match self {
                Node::Inner(l, r, s) if !l.is_full() => {
                    Node::Inner(Box::new(l.insert(leaf)), r, s + 1)
                }
                Node::Inner(l, r, s) => Node::Inner(l, Box::new(r.insert(leaf)), s + 1),
                Node::Leaf(_) => unreachable!("a leaf is full"),
            }
        }
        fn hash(&self) -> Digest {
            match self {
                Node::Leaf(d) => *d,
                Node::Inner(l, r, _) => node_hash(&l.hash(), &r.hash()),
            }
        }
    }

    fn leaves(n: usize) -> Vec<Digest> {
        (0..n)
            .map(|i| sha256(&[&(i as u64).to_le_bytes()]))
            .collect()
    }

    #[test]
    fn small_trees_have_ccfs_shape() {
        let l = leaves(7);
        let mut t = MerkleTree::new();
        for d in &l {
            t.append(*d);
        }
        let h01 = node_hash(&l[0], &l[1]);
        let h23 = node_hash(&l[2], &l[3]);
        let h0123 = node_hash(&h01, &h23);
        assert_eq!(t.root_at(1), Some(l[0]));
        assert_eq!(t.root_at(3), Some(node_hash(&h01, &l[2])));
        assert_eq!(t.root_at(5), Some(node_hash(&h0123, &l[4])));
        let h45 = node_hash(&l[4], &l[5]);
        assert_eq!(
            t.root_at(7),
            Some(node_hash(&h0123, &node_hash(&h45, &l[6])))
        );
        assert_eq!(t.root_at(0), None);
        assert_eq!(t.root_at(8), None);
        assert_eq!(
            t.proof(6, 7).unwrap(),
            vec![
                ProofStep {
                    side: Side::Left,
                    hash: h45
                },
                ProofStep {
                    side: Side::Left,
                    hash: h0123
                }
            ]
        );
    }

    #[test]
    fn leaf_hash_is_ccfs() {
        let ws = [1u8; 32];
        let claims = [0u8; 32];
        let ce = "ce:2.15:0123abcd";
        let mut concat = ws.to_vec();
        concat.extend_from_slice(digest::digest(&SHA256, ce.as_bytes()).as_ref());
        concat.extend_from_slice(&claims);
        assert_eq!(
            &leaf_hash(&ws, ce, &claims)[..],
            digest::digest(&SHA256, &concat).as_ref()
        );
    }

    #[test]
    fn proof_json_round_trips() {
        let step = ProofStep {
            side: Side::Left,
            hash: [0xab; 32],
        };
        let json = step.to_json();
        assert_eq!(json, serde_json::json!({ "left": "ab".repeat(32) }));
        assert_eq!(ProofStep::from_json(&json), Some(step));
        assert_eq!(ProofStep::from_json(&serde_json::json!({"up": "00"})), None);
        assert_eq!(
            ProofStep::from_json(&serde_json::json!({"left": "00"})),
            None
        );
    }

    proptest! {
        #[test]
        fn roots_and_proofs_match_both_models(n in 1usize..200, picks in proptest::collection::vec(any::<u64>(), 4)) {
            let l = leaves(n);
            let mut t = MerkleTree::new();
            let mut model: Option<Node> = None;
            for (i, d) in l.iter().enumerate() {
                prop_assert_eq!(t.append(*d), i as u64);
                model = Some(match model.take() {
                    None => Node::Leaf(*d),
                    Some(m) => m.insert(*d),
                });
                let size = i as u64 + 1;
                prop_assert_eq!(t.root().unwrap(), model_root(&l[..=i]));
                prop_assert_eq!(t.root().unwrap(), model.as_ref().unwrap().hash());
                prop_assert_eq!(t.root_at(size), t.root());
            }
            // Proofs for past sizes too: every (index, size) picked folds to that size's root.
            for p in picks {
                let size = 1 + p % n as u64;
                let index = (p >> 32) % size;
                let proof = t.proof(index, size).unwrap();
                prop_assert_eq!(
                    root_from_proof(&l[index as usize], &proof),
                    model_root(&l[..size as usize])
                );
                // A wrong leaf does not fold to the root.
                prop_assert_ne!(
                    root_from_proof(&sha256(&[b"other"]), &proof),
                    model_root(&l[..size as usize])
                );
            }
        }
    }
}
