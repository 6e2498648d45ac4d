//! Who can talk to whom: the nodes partitioned into sides.

use super::{Host, Sim};
use crate::types::NodeId;

impl<H: Host> Sim<H> {
    /// Splits the nodes into groups that can only talk within themselves; nodes listed
    /// nowhere are isolated.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        let n = self.slots.len();
        let mut assignment: Vec<usize> = (0..n).map(|i| groups.len() + i).collect();
        for (g, members) in groups.iter().enumerate() {
            for &m in *members {
                assignment[m] = g;
            }
        }
        self.note(format!("partition {assignment:?}"));
        self.groups = Some(assignment);
    }

    /// True if nodes `a` and `b` can talk under the current partition.
    pub fn linked(&self, a: usize, b: usize) -> bool {
        self.connected(NodeId(a as u32), NodeId(b as u32))
    }

    /// Removes every partition and every cut link.
    pub fn heal(&mut self) {
        self.note("heal".into());
        self.groups = None;
        self.cut.clear();
    }

    /// Cuts one direction of a link: everything `from` sends `to` is lost, while `to`'s
    /// messages still reach `from` (a one-way loss). [`Sim::heal`] mends it.
    pub fn cut_one_way(&mut self, from: usize, to: usize) {
        self.note(format!("cut n{from} -> n{to}"));
        self.cut.insert((from, to));
    }

    /// Whether a message from `a` reaches `b`.
    pub(super) fn connected(&self, a: NodeId, b: NodeId) -> bool {
        if self.cut.contains(&(a.index(), b.index())) {
            return false;
        }
        match &self.groups {
            None => true,
            Some(groups) => groups[a.index()] == groups[b.index()],
        }
    }
}
