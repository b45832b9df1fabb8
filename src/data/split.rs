//! Class-incremental task splits: the classes of a data set divided into `num_tasks` disjoint
//! tasks of equal size, in a class order fixed by a seed (Split CIFAR-10/2, /5, Split
//! Tiny-ImageNet/10, ...).
//!
//! The class order is the identity (`TaskSplit::in_order`: a fixed order `0, 1, ...` that
//! needs no RNG to reproduce), a seeded permutation (`TaskSplit::new`), or given explicitly
//! (`TaskSplit::from_order`, e.g. to reproduce another code's order). Task `t` holds `class_order[t*k..(t+1)*k]` with
//! `k = num_classes / num_tasks`.
//!
//! The seeded permutation is a Fisher–Yates shuffle driven by SplitMix64 (Steele, Lea, Flood
//! 2014) seeded with `seed`, with `j = (u64 * (i + 1)) >> 64`; it is part of this crate's
//! contract and does not change with the `rand` version. Every seed, 0 included, gives a
//! shuffled order; use [`TaskSplit::in_order`] for the identity.

use super::ImageSet;
use crate::{Error, Result};

/// A division of `num_classes` classes into `num_tasks` disjoint tasks of equal size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSplit {
    order: Vec<u32>,
    num_tasks: usize,
    task_of: Vec<usize>,
}

/// SplitMix64: the 64-bit generator of Steele, Lea and Flood (2014).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (multiply-shift; bias below 2^-40 for the bounds used here).
    fn below(&mut self, bound: usize) -> usize {
        ((self.next_u64() as u128 * bound as u128) >> 64) as usize
    }
}

impl TaskSplit {
    /// `num_classes` classes in a seeded random order, divided into `num_tasks` tasks.
    ///
    /// Errors: `num_tasks` is 0, larger than `num_classes`, or does not divide it.
    pub fn new(num_classes: usize, num_tasks: usize, seed: u64) -> Result<TaskSplit> {
        check_sizes(num_classes, num_tasks)?;
        let mut order: Vec<u32> = (0..num_classes as u32).collect();
        let mut rng = SplitMix64(seed);
        for i in (1..order.len()).rev() {
            let j = rng.below(i + 1);
            order.swap(i, j);
        }
        TaskSplit::from_order(order, num_tasks)
    }

    /// Classes `0, 1, ..., num_classes - 1` in order, divided into `num_tasks` tasks
    /// (task 0 = classes `0..k`). Errors as [`TaskSplit::new`].
    pub fn in_order(num_classes: usize, num_tasks: usize) -> Result<TaskSplit> {
        TaskSplit::from_order((0..num_classes as u32).collect(), num_tasks)
    }

    /// An explicit class order (a permutation of `0..order.len()`), divided into `num_tasks`
    /// tasks. Errors: not a permutation, or the sizes errors of [`TaskSplit::new`].
    pub fn from_order(order: Vec<u32>, num_tasks: usize) -> Result<TaskSplit> {
        check_sizes(order.len(), num_tasks)?;
        let k = order.len() / num_tasks;
        let mut task_of = vec![usize::MAX; order.len()];
        for (pos, &c) in order.iter().enumerate() {
            let slot = task_of.get_mut(c as usize).ok_or_else(|| {
                Error::invalid(format!(
                    "class order holds class {c}, outside 0..{}",
                    order.len()
                ))
            })?;
            if *slot != usize::MAX {
                return Err(Error::invalid(format!("class order holds class {c} twice")));
            }
            *slot = pos / k;
        }
        Ok(TaskSplit {
            order,
            num_tasks,
            task_of,
        })
    }

    /// Number of tasks.
    pub fn num_tasks(&self) -> usize {
        self.num_tasks
    }

    /// Number of classes over all tasks.
    pub fn num_classes(&self) -> usize {
        self.order.len()
    }

    /// Classes in each task.
    pub fn classes_per_task(&self) -> usize {
        self.order.len() / self.num_tasks
    }

    /// The class order: task 0's classes, then task 1's, ...
    pub fn class_order(&self) -> &[u32] {
        &self.order
    }

    fn check_task(&self, t: usize) -> Result<()> {
        if t >= self.num_tasks {
            return Err(Error::invalid(format!(
                "task {t} does not exist: the split has {} tasks (0..{})",
                self.num_tasks, self.num_tasks
            )));
        }
        Ok(())
    }

    /// The classes of task `t`, in class order. Error: `t >= num_tasks`.
    pub fn classes(&self, t: usize) -> Result<&[u32]> {
        self.check_task(t)?;
        let k = self.classes_per_task();
        Ok(&self.order[t * k..(t + 1) * k])
    }

    /// The classes of tasks `0..=t` (all classes seen up to and including task `t`).
    pub fn classes_up_to(&self, t: usize) -> Result<&[u32]> {
        self.check_task(t)?;
        Ok(&self.order[..(t + 1) * self.classes_per_task()])
    }

    /// The task holding class `c`. Error: `c >= num_classes`.
    pub fn task_of_class(&self, c: u32) -> Result<usize> {
        self.task_of.get(c as usize).copied().ok_or_else(|| {
            Error::invalid(format!(
                "class {c} does not exist: the split has {} classes",
                self.order.len()
            ))
        })
    }

    fn check_set(&self, set: &ImageSet) -> Result<()> {
        if set.num_classes() != self.num_classes() {
            return Err(Error::invalid(format!(
                "the image set has {} classes but the task split has {}",
                set.num_classes(),
                self.num_classes()
            )));
        }
        if let Some((i, l)) = set
            .labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= self.num_classes())
        {
            return Err(Error::invalid(format!(
                "image {i} has label {l}, outside the {} classes",
                self.num_classes()
            )));
        }
        Ok(())
    }

    fn indices_where(&self, set: &ImageSet, keep: impl Fn(usize) -> bool) -> Result<Vec<usize>> {
        self.check_set(set)?;
        Ok(set
            .labels
            .iter()
            .enumerate()
            .filter(|(_, &l)| keep(self.task_of[l as usize]))
            .map(|(i, _)| i)
            .collect())
    }

    /// Indices (ascending) of the images of `set` whose class is in task `t`.
    /// Errors: `t` out of range, a set with another number of classes.
    pub fn indices(&self, set: &ImageSet, t: usize) -> Result<Vec<usize>> {
        self.check_task(t)?;
        self.indices_where(set, |task| task == t)
    }

    /// Indices (ascending) of the images of `set` whose class is in tasks `0..=t`.
    pub fn indices_up_to(&self, set: &ImageSet, t: usize) -> Result<Vec<usize>> {
        self.check_task(t)?;
        self.indices_where(set, |task| task <= t)
    }

    /// The images of task `t` (original labels and class names kept).
    pub fn subset(&self, set: &ImageSet, t: usize) -> Result<ImageSet> {
        Ok(set.select(&self.indices(set, t)?))
    }

    /// The images of tasks `0..=t` (original labels and class names kept).
    pub fn subset_up_to(&self, set: &ImageSet, t: usize) -> Result<ImageSet> {
        Ok(set.select(&self.indices_up_to(set, t)?))
    }
}

fn check_sizes(num_classes: usize, num_tasks: usize) -> Result<()> {
    if num_tasks == 0 {
        return Err(Error::invalid(
            "num_tasks is 0: a split needs at least one task",
        ));
    }
    if num_tasks > num_classes {
        return Err(Error::invalid(format!(
            "num_tasks {num_tasks} is larger than the {num_classes} classes"
        )));
    }
    if num_classes % num_tasks != 0 {
        return Err(Error::invalid(format!(
            "{num_classes} classes do not divide into {num_tasks} tasks of equal size"
        )));
    }
    if num_classes > u32::MAX as usize {
        return Err(Error::invalid(format!("{num_classes} classes is too many")));
    }
    Ok(())
}
