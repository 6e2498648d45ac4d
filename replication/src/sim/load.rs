//! Closed-loop load on a simulated kv group, for its benches: clerks that each work on
//! their own key forever, in a mix of Puts and Gets, counting completions.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use kv_engine::kv::Reply;

use super::kv::{get, put, Action, KvCluster, Script, Scripts};

/// Bytes of each Put's value.
pub const VALUE_BYTES: usize = 32;

/// What the clerks send.
#[derive(Clone, Copy, Debug)]
pub enum Mix {
    /// Puts only.
    Puts,
    /// Of every ten operations, nine Gets and one Put.
    ReadHeavy,
}

impl Mix {
    pub fn name(self) -> &'static str {
        match self {
            Mix::Puts => "puts",
            Mix::ReadHeavy => "read_heavy",
        }
    }
}

/// A clerk that works on its own key forever, counting completions.
struct ClosedLoop {
    clerk: usize,
    key: String,
    value: String,
    mix: Mix,
    sent: u64,
    done: Rc<Cell<u64>>,
}

impl Script<KvCluster> for ClosedLoop {
    fn next(&mut self, _c: &mut KvCluster, last: Option<Reply>) -> Action {
        if last.is_some() {
            self.done.set(self.done.get() + 1);
        }
        self.sent += 1;
        let op = match self.mix {
            Mix::ReadHeavy if !self.sent.is_multiple_of(10) => get(&self.key),
            Mix::Puts | Mix::ReadHeavy => put(&self.key, &self.value),
        };
        Action::Run {
            clerk: self.clerk,
            op: op.into(),
        }
    }
}

pub struct Run {
    /// The group.
    pub cluster: KvCluster,
    scripts: Scripts,
    done: Rc<Cell<u64>>,
}

impl Run {
    /// Operations completed so far.
    pub fn done(&self) -> u64 {
        self.done.get()
    }

    /// A group with `clerks` closed-loop clerks of `mix`, a leader elected and the pipeline
    /// filled.
    pub fn new(clerks: usize, mix: Mix) -> Run {
        let mut cluster = KvCluster::new(7, 3);
        cluster.record = false;
        let done = Rc::new(Cell::new(0));
        let mut scripts = Scripts::new();
        for i in 0..clerks {
            let clerk = cluster.clerk_all(i % 3);
            scripts.add(ClosedLoop {
                clerk,
                key: format!("key{i}"),
                value: "v".repeat(VALUE_BYTES),
                mix,
                sent: 0,
                done: done.clone(),
            });
        }
        let mut run = Run {
            cluster,
            scripts,
            done,
        };
        // Elect a leader and fill the pipeline.
        run.cluster.drive(&mut run.scripts, Duration::from_secs(1));
        run
    }

    /// Runs until `ops` more operations completed.
    pub fn complete(&mut self, ops: u64) {
        let target = self.done.get() + ops;
        while self.done.get() < target {
            self.cluster
                .drive(&mut self.scripts, Duration::from_millis(1));
        }
    }

    /// Instances applied (the most any replica applied).
    pub fn applied(&self) -> u64 {
        (0..3)
            .filter_map(|i| self.cluster.sim.node(i))
            .filter_map(|r| r.status().applied)
            .map(|s| s.0 + 1)
            .max()
            .unwrap_or(0)
    }
}
