//! The replica behind hsb-standby: the `model` test double or a paused Xen domain.

use hsb_common::time::Nanos;
use hsb_domain::disk::Disk;
use hsb_domain::domain::{CheckpointSource, DomainError, Replica};
use hsb_domain::model::ModelDomain;
use hsb_domain::xen::XenReplica;

/// The replica.
pub enum Rep {
    /// The hypervisor test double.
    Model(ModelDomain),
    /// A paused Xen domain created by the toolstack (`xl restore -p`).
    Xen(Box<XenReplica>),
}

impl Rep {
    /// Open the configured replica; a Xen replica's disk (`xen.disk`) is opened already (its
    /// export is served before the replica exists).
    pub fn open(
        s: &hsb_standby::config::Settings,
        xen_disk: Option<Disk>,
    ) -> Result<Rep, DomainError> {
        match &s.xen {
            None => {
                let mut d = ModelDomain::blank(s.model_pages);
                if let Some(ds) = &s.disk {
                    // The replica's disk: checkpoints' writes are applied to it; the workload
                    // writes it once the replica is activated.
                    let disk =
                        crate::disk::open_replica_disk(&ds.disk, "model.disk").map_err(|e| {
                            DomainError {
                                op: "model.disk",
                                detail: e.to_string(),
                            }
                        })?;
                    d.attach_disk(disk, ds.workload, false)
                        .map_err(|detail| DomainError {
                            op: "model.disk",
                            detail,
                        })?;
                }
                Ok(Rep::Model(d))
            }
            Some(x) => {
                let domid = hsb_domain::xen::resolve(&x.domain)?;
                let mut r = XenReplica::open(domid)?;
                if let Some(d) = xen_disk {
                    r.attach_disk(d);
                }
                Ok(Rep::Xen(Box::new(r)))
            }
        }
    }

    /// The checkpoint interface.
    pub fn replica(&mut self) -> &mut dyn Replica {
        match self {
            Rep::Model(d) => d,
            Rep::Xen(x) => x.as_mut(),
        }
    }

    /// The frame-number space and the most pages a checkpoint can carry.
    pub fn layout(&self) -> (u64, u64) {
        match self {
            Rep::Model(d) => (d.page_count(), d.page_count()),
            Rep::Xen(x) => (Replica::pages(x.as_ref()), Replica::max_pages(x.as_ref())),
        }
    }

    /// The replica's disk, if it has one.
    pub fn disk(&mut self) -> Option<&mut Disk> {
        match self {
            Rep::Model(d) => d.disk_mut(),
            Rep::Xen(x) => x.disk_mut(),
        }
    }

    /// The replica's disk, if it has one.
    pub fn disk_ref(&self) -> Option<&Disk> {
        match self {
            Rep::Model(d) => d.disk_ref(),
            Rep::Xen(x) => x.disk_ref(),
        }
    }

    /// The model domain, if this is one.
    pub fn model(&mut self) -> Option<&mut ModelDomain> {
        match self {
            Rep::Model(d) => Some(d),
            Rep::Xen(_) => None,
        }
    }

    /// Let the activated model's workload run (a Xen guest runs by itself).
    pub fn run(&mut self, now: Nanos) {
        if let Rep::Model(d) = self {
            d.run(now);
        }
    }

    /// The model's memory digest.
    pub fn digest(&self) -> Option<u32> {
        match self {
            Rep::Model(d) => Some(d.digest()),
            Rep::Xen(_) => None,
        }
    }

    /// The model service's counter.
    pub fn counter(&self) -> Option<u64> {
        match self {
            Rep::Model(d) => Some(d.counter()),
            Rep::Xen(_) => None,
        }
    }

    /// What status says the backend is.
    pub fn describe(&self) -> String {
        match self {
            Rep::Model(_) => "model (hypervisor test double)".into(),
            Rep::Xen(x) => format!("xen (replica domain {})", x.domid()),
        }
    }

    /// Stop the activated copy (rule 4).
    pub fn fence(&mut self) {
        let r = match self {
            Rep::Model(d) => d.suspend(),
            Rep::Xen(x) => x.pause(),
        };
        if let Err(e) = r {
            log::error!("fence: {e}");
        }
    }

    /// Undo [`Rep::fence`].
    pub fn unfence(&mut self) {
        let r = match self {
            Rep::Model(d) => d.resume(),
            Rep::Xen(x) => x.unpause(),
        };
        if let Err(e) = r {
            log::error!("unfence: {e}");
        }
    }
}
