//! What a share is, as data: the operations its log carries and the tree they fold into.
//!
//! A share is a log whose entries carry batches of [`Change`]s. Every path is a multi-value register:
//! a change names the values it replaces (`supersedes`), so two writers who change one file without
//! seeing each other's change both survive, and every replica shows them under the same names (the
//! newest at the path, the others as conflict copies). Deletes and renames are changes too: a rename
//! is a delete of one path and a write of another with the same content hash, so it moves metadata,
//! never data. The fold depends only on the set of entries, never on their arrival order.
//!
//! Nothing here does IO: the folder engine ([`super::folder`]) reads disks and the network.

use std::collections::{BTreeMap, BTreeSet};

use pairs_base::NodeId;
use pairs_blobs::Hash;
use pairs_blobs::collection::check_path;
use pairs_log::entry::MAX_PAYLOAD;
use pairs_log::{Entry, EntryId, Log, Payload, StoreError};
use serde::{Deserialize, Serialize};

/// Marks a log entry that carries share changes (a share's log may carry other data too).
const MARKER: &[u8] = b"\0pairs-share1";

/// A path component longer than this cannot be written on common filesystems.
const MAX_NAME: usize = 255;

/// One value of a path: entry and position of the change that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ValueId {
    /// The entry carrying the change.
    pub entry: EntryId,
    /// The change's index within the entry.
    pub index: u32,
}

impl ValueId {
    /// A short, stable text for names and listings.
    pub fn short(&self) -> String {
        let hex = data_encoding::HEXLOWER.encode(&self.entry.as_bytes()[..4]);
        if self.index == 0 {
            hex
        } else {
            format!("{hex}-{}", self.index)
        }
    }
}

/// What a path holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileState {
    /// A regular file.
    File {
        /// Content hash (the blob).
        hash: [u8; 32],
        /// Bytes.
        size: u64,
        /// The executable bit.
        executable: bool,
        /// Modification time, milliseconds since the Unix epoch (informational).
        mtime: u64,
    },
    /// A symbolic link to a relative path inside the share.
    Symlink {
        /// The link's target, as written.
        target: String,
    },
    /// Deleted.
    Deleted,
}

impl FileState {
    /// The content hash of a file.
    pub fn hash(&self) -> Option<Hash> {
        match self {
            FileState::File { hash, .. } => Some(Hash(*hash)),
            _ => None,
        }
    }

    /// Bytes of content (0 for links and deletions).
    pub fn size(&self) -> u64 {
        match self {
            FileState::File { size, .. } => *size,
            _ => 0,
        }
    }

    fn is_deleted(&self) -> bool {
        matches!(self, FileState::Deleted)
    }
}

/// One change of one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The path, `/`-separated, relative to the share's root.
    pub path: String,
    /// What it holds now.
    pub state: FileState,
    /// The values of this path (or of a conflict copy) this change replaces.
    pub supersedes: Vec<ValueId>,
}

#[derive(Serialize, Deserialize)]
struct Batch {
    changes: Vec<Change>,
}

/// Changes as log payloads, each under the log's payload limit.
pub fn encode_changes(changes: &[Change]) -> Vec<Payload> {
    // Each change is encoded once; a batch is postcard's encoding of a sequence, i.e. its length
    // as a varint followed by its elements, so batches are cut and joined from those bytes.
    let encoded: Vec<Vec<u8>> = changes
        .iter()
        .map(|c| postcard::to_stdvec(c).expect("changes always serialize"))
        .collect();
    let count_len = |n: usize| postcard::to_stdvec(&(n as u64)).expect("a count").len();
    let mut payloads = Vec::new();
    let mut start = 0;
    while start < changes.len() {
        // Grow the batch while it fits; one change always fits (paths are bounded).
        let (mut end, mut len) = (start + 1, encoded[start].len());
        while end < changes.len()
            && MARKER.len() + count_len(end + 1 - start) + len + encoded[end].len() <= MAX_PAYLOAD
        {
            len += encoded[end].len();
            end += 1;
        }
        let mut bytes = MARKER.to_vec();
        bytes.extend(postcard::to_stdvec(&((end - start) as u64)).expect("a count"));
        for change in &encoded[start..end] {
            bytes.extend_from_slice(change);
        }
        debug_assert!(bytes.len() <= MAX_PAYLOAD);
        payloads.push(Payload::Data(bytes));
        start = end;
    }
    payloads
}

/// The changes an entry carries (none for other entries, or for a malformed batch).
pub fn decode_changes(entry: &Entry) -> Vec<Change> {
    match &entry.body().payload {
        Payload::Data(bytes) => bytes
            .strip_prefix(MARKER)
            .and_then(|b| postcard::from_bytes::<Batch>(b).ok())
            .map(|b| b.changes)
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// A value of a path and what decides its rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Which change wrote it.
    pub id: ValueId,
    /// What it holds.
    pub state: FileState,
    /// Who wrote it.
    pub author: NodeId,
    /// The writing entry's Lamport clock.
    pub clock: u64,
    /// The author's wall clock when writing (informational).
    pub timestamp: u64,
}

impl Version {
    fn rank(&self) -> (u64, NodeId, ValueId) {
        (self.clock, self.author, self.id)
    }
}

/// A path as a replica shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// The register the value lives in (differs from the shown path for a conflict copy).
    pub register: String,
    /// The value shown.
    pub version: Version,
    /// Whether it is a conflict copy.
    pub conflict: bool,
}

/// A path a writer wrote that this replica will not show, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// The path as written (cut to 200 characters).
    pub path: String,
    /// Why.
    pub why: String,
}

/// The tree of a share: every path's live values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    registers: BTreeMap<String, Vec<Version>>,
    /// Entries folded.
    pub entries: usize,
    /// Paths refused (unsafe or unwritable names).
    pub rejected: Vec<Rejected>,
}

impl Tree {
    /// Folds the changes of `entries` (in any order; pass only the entries that count).
    pub fn fold<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Tree {
        let mut tree = Tree::default();
        let mut superseded: BTreeSet<ValueId> = BTreeSet::new();
        let mut rejected: BTreeMap<String, String> = BTreeMap::new();
        for entry in entries {
            tree.entries += 1;
            let body = entry.body();
            for (index, change) in (0u32..).zip(decode_changes(entry)) {
                superseded.extend(change.supersedes.iter().copied());
                if let Err(why) = check_share_path(&change.path) {
                    rejected.insert(change.path.chars().take(200).collect(), why);
                    continue;
                }
                if let FileState::Symlink { target } = &change.state
                    && let Err(why) = check_link(&change.path, target)
                {
                    rejected.insert(change.path.clone(), why);
                    continue;
                }
                tree.registers
                    .entry(change.path)
                    .or_default()
                    .push(Version {
                        id: ValueId {
                            entry: entry.id(),
                            index,
                        },
                        state: change.state,
                        author: body.author,
                        clock: body.clock,
                        timestamp: body.timestamp,
                    });
            }
        }
        for versions in tree.registers.values_mut() {
            versions.retain(|v| !superseded.contains(&v.id));
            // Newest first: the order every replica agrees on.
            versions.sort_by_key(|v| std::cmp::Reverse(v.rank()));
        }
        tree.registers.retain(|_, versions| !versions.is_empty());
        tree.rejected = rejected
            .into_iter()
            .map(|(path, why)| Rejected { path, why })
            .collect();
        tree
    }

    /// The tree of every counted entry of `log` (entries of removed writers past their cut-off left
    /// out); with `version`, of its first `version` entries only (in the log's causal order).
    pub fn of(log: &Log, version: Option<usize>) -> Result<Tree, StoreError> {
        let entries = log.entries()?;
        let end = version.unwrap_or(entries.len()).min(entries.len());
        let mut tree = Tree::fold(
            entries[..end]
                .iter()
                .filter(|e| log.counts(&e.body().author, e.body().seq)),
        );
        tree.entries = end;
        Ok(tree)
    }

    /// The live values of one path, newest first (deletions included).
    pub fn versions(&self, path: &str) -> &[Version] {
        self.registers.get(path).map_or(&[], |v| v.as_slice())
    }

    /// Every path as shown: the newest live value at its path, concurrent ones as conflict copies
    /// (`name.conflict-ID.ext`, the same on every replica). A path under another that is a file
    /// is refused (reported in `rejected` of the result).
    pub fn shown(&self) -> BTreeMap<String, Shown> {
        let mut shown = BTreeMap::new();
        let mut copies = Vec::new();
        for (path, versions) in &self.registers {
            let mut live = versions.iter().filter(|v| !v.state.is_deleted());
            if let Some(first) = live.next() {
                shown.insert(
                    path.clone(),
                    Shown {
                        register: path.clone(),
                        version: first.clone(),
                        conflict: false,
                    },
                );
            }
            for other in live {
                copies.push((path.clone(), other.clone()));
            }
        }
        for (path, version) in copies {
            let mut name = conflict_name(&path, &version.id);
            while shown.contains_key(&name) {
                name = format!("{name}~");
            }
            shown.insert(
                name,
                Shown {
                    register: path,
                    version,
                    conflict: true,
                },
            );
        }
        // A file cannot also be a directory: the deeper path loses (it is reported, not written).
        let files: BTreeSet<String> = shown.keys().cloned().collect();
        shown.retain(|path, _| {
            let mut prefix = path.as_str();
            while let Some(i) = prefix.rfind('/') {
                prefix = &prefix[..i];
                if files.contains(prefix) {
                    return false;
                }
            }
            true
        });
        shown
    }

    /// Paths refused by [`Tree::shown`] because a parent is a file.
    pub fn shadowed(&self) -> Vec<String> {
        let shown = self.shown();
        self.registers
            .iter()
            .filter(|(path, versions)| {
                versions.iter().any(|v| !v.state.is_deleted()) && !shown.contains_key(*path)
            })
            .map(|(path, _)| path.clone())
            .collect()
    }

    /// The changes that make `path` hold `state`, written by someone who sees this tree: the
    /// shown value at `path` is replaced (a conflict copy's value is replaced in its own register,
    /// and the copy becomes an ordinary file) along with any deletions left in the register.
    pub fn change_for(&self, path: &str, state: FileState) -> Vec<Change> {
        let shown = self.shown();
        match shown.get(path) {
            Some(s) if s.conflict => {
                // The copy's value leaves its register; the path becomes a file of its own.
                let mut changes = vec![Change {
                    path: s.register.clone(),
                    state: FileState::Deleted,
                    supersedes: vec![s.version.id],
                }];
                if !state.is_deleted() {
                    changes.push(Change {
                        path: path.to_string(),
                        state,
                        supersedes: self.deleted_values(path),
                    });
                }
                changes
            }
            Some(s) => {
                let mut supersedes = self.deleted_values(path);
                supersedes.push(s.version.id);
                vec![Change {
                    path: path.to_string(),
                    state,
                    supersedes,
                }]
            }
            None if state.is_deleted() => Vec::new(),
            None => vec![Change {
                path: path.to_string(),
                state,
                supersedes: self.deleted_values(path),
            }],
        }
    }

    /// The changes that make `path` hold `state`, written by a replica whose copy of `path` was in
    /// step with value `base` before it changed (None: the path is new there). Only `base` is
    /// replaced: a value written meanwhile by someone else survives as a conflict copy, so an edit
    /// made without seeing another one never erases it.
    pub fn change_from(&self, path: &str, state: FileState, base: Option<ValueId>) -> Vec<Change> {
        let shown = self.shown();
        if let Some(s) = shown.get(path)
            && Some(s.version.id) == base
        {
            return self.change_for(path, state);
        }
        if state.is_deleted() {
            return Vec::new();
        }
        let mut supersedes = self.deleted_values(path);
        if let Some(base) = base
            && self.versions(path).iter().any(|v| v.id == base)
        {
            supersedes.push(base);
        }
        vec![Change {
            path: path.to_string(),
            state,
            supersedes,
        }]
    }

    fn deleted_values(&self, path: &str) -> Vec<ValueId> {
        self.versions(path)
            .iter()
            .filter(|v| v.state.is_deleted())
            .map(|v| v.id)
            .collect()
    }

    /// Files and bytes shown.
    pub fn totals(&self) -> (usize, u64) {
        let shown = self.shown();
        // Sizes come from any writer: add them without overflow.
        let bytes = shown.values().fold(0u64, |total, s| {
            total.saturating_add(s.version.state.size())
        });
        (shown.len(), bytes)
    }
}

/// The name a conflict copy of `path` written by `id` gets: `dir/name.conflict-ID.ext`.
pub fn conflict_name(path: &str, id: &ValueId) -> String {
    let (dir, name) = match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    };
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    format!("{dir}{stem}.conflict-{}{ext}", id.short())
}

/// Checks a path written by some writer: relative, plain components, writable names.
pub fn check_share_path(path: &str) -> Result<(), String> {
    check_path(path).map_err(|e| e.to_string())?;
    for part in path.split('/') {
        if part.len() > MAX_NAME {
            return Err("a name longer than 255 bytes".into());
        }
        if part.ends_with(".pairs-part") {
            return Err("a name reserved for downloads in progress".into());
        }
    }
    Ok(())
}

/// A link is kept only if its target is relative and stays inside the share.
pub fn check_link(path: &str, target: &str) -> Result<(), String> {
    if target.is_empty() || target.len() > 4096 || target.contains('\0') {
        return Err("a link with an empty, long or NUL target".into());
    }
    if target.starts_with('/') {
        return Err("a link to an absolute path".into());
    }
    // Depth of the link's directory, then walk the target.
    let mut depth = path.matches('/').count() as i64;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => depth -= 1,
            _ => depth += 1,
        }
        if depth < 0 {
            return Err("a link that leads outside the share".into());
        }
    }
    Ok(())
}

/// One version of a share: an entry that carried changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionSummary {
    /// The version number: the tree after the log's first `version` entries.
    pub version: usize,
    /// Who wrote it.
    pub author: NodeId,
    /// The author's wall clock, milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// Files written (new or changed).
    pub written: usize,
    /// Paths deleted.
    pub deleted: usize,
    /// The first few paths it touched.
    pub paths: Vec<String>,
}

/// The versions of a share, oldest first (entries in the log's causal order).
pub fn history(entries: &[Entry]) -> Vec<VersionSummary> {
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let changes = decode_changes(entry);
        if changes.is_empty() {
            continue;
        }
        let deleted = changes.iter().filter(|c| c.state.is_deleted()).count();
        out.push(VersionSummary {
            version: i + 1,
            author: entry.body().author,
            timestamp: entry.body().timestamp,
            written: changes.len() - deleted,
            deleted,
            paths: changes.iter().take(5).map(|c| c.path.clone()).collect(),
        });
    }
    out
}

/// How two trees differ, path by path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    /// Paths only in the second tree.
    pub added: Vec<String>,
    /// Paths whose content or kind changed.
    pub changed: Vec<String>,
    /// Paths only in the first tree.
    pub removed: Vec<String>,
}

impl Diff {
    /// What changed from `a` to `b`.
    pub fn between(a: &Tree, b: &Tree) -> Diff {
        let (a, b) = (a.shown(), b.shown());
        let mut diff = Diff::default();
        for (path, shown) in &b {
            match a.get(path) {
                None => diff.added.push(path.clone()),
                Some(old) if old.version.state != shown.version.state => {
                    diff.changed.push(path.clone())
                }
                Some(_) => {}
            }
        }
        diff.removed = a.keys().filter(|p| !b.contains_key(*p)).cloned().collect();
        diff
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pairs_base::SecretKey;

    fn file(byte: u8, size: u64) -> FileState {
        FileState::File {
            hash: [byte; 32],
            size,
            executable: false,
            mtime: 0,
        }
    }

    #[test]
    fn totals_of_writers_sizes_do_not_overflow() {
        // Sizes come from any writer; their sum saturates instead of overflowing.
        let log = Log::in_memory(SecretKey::from_bytes(&[1; 32]).node_id());
        let key = SecretKey::from_bytes(&[1; 32]);
        let change = |path: &str, size| Change {
            path: path.into(),
            state: file(1, size),
            supersedes: Vec::new(),
        };
        write(&log, &key, &[change("a", u64::MAX), change("b", 5)]);
        let tree = Tree::of(&log, None).unwrap();
        assert_eq!(tree.totals(), (2, u64::MAX));
    }

    fn write(log: &Log, key: &SecretKey, changes: &[Change]) {
        log.append_batch(key, encode_changes(changes)).unwrap();
    }

    /// Copies what `from` has and `into` lacks, as a replication session would.
    fn merge(from: &Log, into: &Log) {
        let missing: Vec<_> = from
            .entries()
            .unwrap()
            .into_iter()
            .filter(|e| !into.contains(&e.id()))
            .map(|entry| pairs_log::store::Verified {
                seal: from.seal_of(&entry.id()).unwrap(),
                entry,
            })
            .collect();
        into.apply(missing, 0).unwrap();
    }

    fn tree(log: &Log) -> Tree {
        Tree::fold(&log.entries().unwrap())
    }

    #[test]
    fn batches_stay_under_the_payload_limit_and_round_trip() {
        let changes: Vec<Change> = (0..5000)
            .map(|i| Change {
                path: format!("dir/file-{i:05}.txt"),
                state: file((i % 250) as u8, i),
                supersedes: vec![],
            })
            .collect();
        let payloads = encode_changes(&changes);
        assert!(payloads.len() > 1, "5000 changes need several entries");
        assert!(payloads.len() < 20, "but not one each: {}", payloads.len());
        let owner = SecretKey::generate();
        let log = Log::in_memory(owner.node_id());
        log.append_batch(&owner, payloads).unwrap();
        let t = tree(&log);
        assert_eq!(t.shown().len(), 5000);
        assert_eq!(t.versions("dir/file-00042.txt")[0].state, file(42, 42));
    }

    #[test]
    fn concurrent_edits_of_one_file_keep_both_under_the_same_names_everywhere() {
        let owner = SecretKey::generate();
        let writer = SecretKey::generate();
        let a = Log::in_memory(owner.node_id());
        a.append(&owner, Payload::AddWriter(writer.node_id()))
            .unwrap();
        write(
            &a,
            &owner,
            &[Change {
                path: "notes.txt".into(),
                state: file(1, 10),
                supersedes: vec![],
            }],
        );
        let b = Log::in_memory(owner.node_id());
        merge(&a, &b);
        // Both edit without seeing the other's edit.
        let base = tree(&a);
        write(&a, &owner, &base.change_for("notes.txt", file(2, 20)));
        write(&b, &writer, &base.change_for("notes.txt", file(3, 30)));
        merge(&b, &a);
        merge(&a, &b);
        let (ta, tb) = (tree(&a).shown(), tree(&b).shown());
        assert_eq!(ta, tb, "every replica shows the same names");
        assert_eq!(ta.len(), 2, "both versions kept: {:?}", ta.keys());
        let states: BTreeSet<_> = ta.values().map(|s| s.version.state.size()).collect();
        assert_eq!(states, BTreeSet::from([20, 30]));
        let copy = ta.keys().find(|k| k.contains(".conflict-")).unwrap();
        assert!(copy.starts_with("notes.conflict-") && copy.ends_with(".txt"));
        // Deleting the copy resolves the conflict without touching the other version.
        let t = tree(&a);
        write(&a, &owner, &t.change_for(copy, FileState::Deleted));
        let shown = tree(&a).shown();
        assert_eq!(shown.len(), 1);
        assert!(shown.contains_key("notes.txt"));
    }

    #[test]
    fn edit_beats_a_concurrent_delete() {
        let owner = SecretKey::generate();
        let log = Log::in_memory(owner.node_id());
        write(
            &log,
            &owner,
            &[Change {
                path: "a".into(),
                state: file(1, 1),
                supersedes: vec![],
            }],
        );
        let base = tree(&log);
        let mut delete = base.change_for("a", FileState::Deleted);
        let edit = base.change_for("a", file(2, 2));
        // Same supersedes, different values: fold them as concurrent.
        delete.extend(edit.into_iter().map(|mut c| {
            c.path = "a".into();
            c
        }));
        write(&log, &owner, &delete);
        let shown = tree(&log).shown();
        assert_eq!(shown["a"].version.state, file(2, 2));
    }

    #[test]
    fn a_rename_is_metadata() {
        let owner = SecretKey::generate();
        let log = Log::in_memory(owner.node_id());
        let big = file(7, 1 << 30);
        write(
            &log,
            &owner,
            &[Change {
                path: "big.iso".into(),
                state: big.clone(),
                supersedes: vec![],
            }],
        );
        let t = tree(&log);
        let mut changes = t.change_for("big.iso", FileState::Deleted);
        changes.extend(t.change_for("renamed.iso", big.clone()));
        let before = log.entries().unwrap().len();
        write(&log, &owner, &changes);
        let entry = &log.entries().unwrap()[before];
        assert!(
            entry.body().encode().len() < 1024,
            "a rename is a few bytes"
        );
        let shown = tree(&log).shown();
        assert_eq!(shown.len(), 1);
        assert_eq!(shown["renamed.iso"].version.state, big);
    }

    #[test]
    fn unsafe_paths_and_links_are_rejected_not_fatal() {
        let owner = SecretKey::generate();
        let log = Log::in_memory(owner.node_id());
        let bad = [
            "../escape",
            "/etc/passwd",
            "a/../../b",
            "a//b",
            "x.pairs-part",
            "nul\0name",
        ];
        let mut changes: Vec<Change> = bad
            .iter()
            .map(|p| Change {
                path: p.to_string(),
                state: file(1, 1),
                supersedes: vec![],
            })
            .collect();
        changes.push(Change {
            path: "link".into(),
            state: FileState::Symlink {
                target: "../../etc".into(),
            },
            supersedes: vec![],
        });
        changes.push(Change {
            path: "sub/ok-link".into(),
            state: FileState::Symlink {
                target: "../good".into(),
            },
            supersedes: vec![],
        });
        changes.push(Change {
            path: "good".into(),
            state: file(2, 2),
            supersedes: vec![],
        });
        write(&log, &owner, &changes);
        let t = tree(&log);
        let shown = t.shown();
        assert_eq!(
            shown.keys().cloned().collect::<Vec<_>>(),
            vec!["good".to_string(), "sub/ok-link".to_string()]
        );
        assert_eq!(t.rejected.len(), bad.len() + 1);
    }

    #[test]
    fn a_file_under_a_file_is_shadowed() {
        let owner = SecretKey::generate();
        let log = Log::in_memory(owner.node_id());
        write(
            &log,
            &owner,
            &[
                Change {
                    path: "a".into(),
                    state: file(1, 1),
                    supersedes: vec![],
                },
                Change {
                    path: "a/b".into(),
                    state: file(2, 1),
                    supersedes: vec![],
                },
            ],
        );
        let t = tree(&log);
        assert_eq!(t.shown().len(), 1);
        assert_eq!(t.shadowed(), vec!["a/b".to_string()]);
    }

    #[test]
    fn diff_names_added_changed_removed() {
        let owner = SecretKey::generate();
        let log = Log::in_memory(owner.node_id());
        let mk = |p: &str, b| Change {
            path: p.into(),
            state: file(b, 1),
            supersedes: vec![],
        };
        write(&log, &owner, &[mk("keep", 1), mk("edit", 2), mk("gone", 3)]);
        let v1 = tree(&log);
        let mut changes = v1.change_for("edit", file(9, 1));
        changes.extend(v1.change_for("gone", FileState::Deleted));
        changes.extend(v1.change_for("new", file(4, 1)));
        write(&log, &owner, &changes);
        let d = Diff::between(&v1, &tree(&log));
        assert_eq!(d.added, vec!["new"]);
        assert_eq!(d.changed, vec!["edit"]);
        assert_eq!(d.removed, vec!["gone"]);
    }

    #[test]
    fn conflict_names() {
        let id = ValueId {
            entry: EntryId([0xab; 32]),
            index: 0,
        };
        assert_eq!(conflict_name("a/b.txt", &id), "a/b.conflict-abababab.txt");
        assert_eq!(conflict_name(".bashrc", &id), ".bashrc.conflict-abababab");
        assert_eq!(conflict_name("Makefile", &id), "Makefile.conflict-abababab");
    }
}
