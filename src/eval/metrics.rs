//! Continual-learning metrics, exactly as defined in DESIGN §4.
//!
//! From a prediction table (true class, predicted class over all classes seen so far) and a task
//! split (the disjoint class set of each task):
//! - **LA** (task-agnostic linear accuracy): share of samples whose predicted class is the true one;
//! - **TP** (task prediction): share of samples whose predicted class lies in the true task's set;
//! - **WP** (within-task prediction): accuracy among the samples whose task was predicted
//!   correctly (CroMo-Mixup's evaluation code), so `LA = TP × WP` (a correct class implies a
//!   correct task); WP is 0 when no task is predicted correctly;
//! - **task-aware accuracy**: the logits masked to the true task's classes, then top-1;
//! - the **accuracy matrix** `A[i][j]` = accuracy on the test samples of task j's classes after
//!   training task i, with the classifier over all classes seen so far (task-agnostic), and the
//!   summaries below. Tasks are numbered from 0 in the API.
//!
//! For a final task index `t` (0-based; `T = t + 1` tasks done):
//! - **average forgetting** (Chaudhry et al. 2018, "RWalk"):
//!   `F_t = 1/t · Σ_{j<t} ( max_{j≤i<t} A[i][j] − A[t][j] )` — the best accuracy a task ever had
//!   after it was learned minus its accuracy now (rows before a task was learned are not used);
//! - **BWT** (Lopez-Paz & Ranzato 2017, "GEM"): `1/t · Σ_{j<t} ( A[t][j] − A[j][j] )`;
//! - **FWT** (GEM): `1/t · Σ_{1≤j≤t} ( A[j−1][j] − b_j )` with `b_j` the accuracy of a
//!   random-init encoder's probe on task j; it needs the entries `A[j−1][j]`, i.e. a probe that
//!   also covers task j's classes before task j is trained;
//! - **average accuracy** `1/T · Σ_{j≤t} A[t][j]`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::probe::argmax;
use crate::{Error, Result};

/// The class sets of the tasks as the metrics see them: task `t` owns the classes `tasks[t]`
/// (disjoint, any sizes). Build it from the data side's [`crate::data::TaskSplit`] with
/// `TaskSplit::from(&split)`, or from explicit class lists with [`TaskSplit::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSplit {
    tasks: Vec<Vec<u32>>,
    task_of: HashMap<u32, usize>,
}

impl From<&crate::data::TaskSplit> for TaskSplit {
    fn from(split: &crate::data::TaskSplit) -> TaskSplit {
        let tasks: Vec<Vec<u32>> = (0..split.num_tasks())
            .map(|t| split.classes(t).map(<[u32]>::to_vec).unwrap_or_default())
            .collect();
        let task_of = tasks
            .iter()
            .enumerate()
            .flat_map(|(t, cs)| cs.iter().map(move |&c| (c, t)))
            .collect();
        TaskSplit { tasks, task_of }
    }
}

impl TaskSplit {
    /// A split from the class ids of each task. Errors on an empty task, a class listed twice
    /// or in two tasks, or no task at all.
    pub fn new(tasks: Vec<Vec<u32>>) -> Result<TaskSplit> {
        if tasks.is_empty() {
            return Err(Error::invalid("task split: no task"));
        }
        let mut task_of = HashMap::new();
        for (t, classes) in tasks.iter().enumerate() {
            if classes.is_empty() {
                return Err(Error::invalid(format!("task split: task {t} has no class")));
            }
            for &c in classes {
                if let Some(prev) = task_of.insert(c, t) {
                    return Err(Error::invalid(format!(
                        "task split: class {c} is in task {prev} and in task {t}"
                    )));
                }
            }
        }
        Ok(TaskSplit { tasks, task_of })
    }

    /// Number of tasks.
    pub fn num_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// The class ids of each task.
    pub fn tasks(&self) -> &[Vec<u32>] {
        &self.tasks
    }

    /// The task that owns `class`, if any.
    pub fn task_of(&self, class: u32) -> Option<usize> {
        self.task_of.get(&class).copied()
    }

    /// All classes of tasks `0..=t`, ascending (the classes seen after training task `t`).
    pub fn classes_up_to(&self, t: usize) -> Vec<u32> {
        let mut c: Vec<u32> = self.tasks[..=t.min(self.tasks.len() - 1)]
            .iter()
            .flatten()
            .copied()
            .collect();
        c.sort_unstable();
        c
    }

    fn task_of_checked(&self, class: u32, what: &str, row: usize) -> Result<usize> {
        self.task_of(class).ok_or_else(|| {
            Error::invalid(format!(
                "{what} class {class} of sample {row} belongs to no task of the split"
            ))
        })
    }
}

/// LA, TP and WP of one prediction table (fractions in `[0, 1]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PredictionMetrics {
    /// Samples in the table.
    pub n: usize,
    /// Task-agnostic accuracy (correct / n).
    pub la: f64,
    /// Task prediction (task of predicted class = true task) / n.
    pub tp: f64,
    /// Within-task prediction: correct / (samples with the task right); 0 if there are none.
    pub wp: f64,
}

/// LA, TP, WP from true and predicted global class ids. Every class must belong to a task of
/// `split`; the table must not be empty.
pub fn prediction_metrics(
    labels: &[u32],
    predicted: &[u32],
    split: &TaskSplit,
) -> Result<PredictionMetrics> {
    check_table(labels, predicted)?;
    let (mut correct, mut task_right) = (0usize, 0usize);
    for (i, (&y, &p)) in labels.iter().zip(predicted).enumerate() {
        let ty = split.task_of_checked(y, "true", i)?;
        let tp = split.task_of_checked(p, "predicted", i)?;
        if ty == tp {
            task_right += 1;
        }
        if y == p {
            correct += 1;
        }
    }
    let n = labels.len();
    Ok(PredictionMetrics {
        n,
        la: correct as f64 / n as f64,
        tp: task_right as f64 / n as f64,
        wp: if task_right == 0 {
            0.0
        } else {
            correct as f64 / task_right as f64
        },
    })
}

/// Task-aware accuracy: for each sample, `logits` (row-major `N × columns.len()`, column `k`
/// scoring class `columns[k]`) restricted to the columns of the true task's classes, top-1
/// (ties: the first column). Errors if a true task has no column.
pub fn task_aware_accuracy(
    logits: &[f32],
    columns: &[u32],
    labels: &[u32],
    split: &TaskSplit,
) -> Result<f64> {
    let c = columns.len();
    if c == 0 || logits.len() != labels.len() * c {
        return Err(Error::invalid(format!(
            "task-aware accuracy: {} logits for {} samples × {c} columns",
            logits.len(),
            labels.len()
        )));
    }
    if labels.is_empty() {
        return Err(Error::invalid("task-aware accuracy: no samples"));
    }
    // Columns of each task.
    let mut task_cols: Vec<Vec<usize>> = vec![Vec::new(); split.num_tasks()];
    for (k, &class) in columns.iter().enumerate() {
        if let Some(t) = split.task_of(class) {
            task_cols[t].push(k);
        }
    }
    let mut correct = 0usize;
    let mut masked = Vec::new();
    for (i, (&y, row)) in labels.iter().zip(logits.chunks(c)).enumerate() {
        let t = split.task_of_checked(y, "true", i)?;
        let cols = &task_cols[t];
        if cols.is_empty() {
            return Err(Error::invalid(format!(
                "task-aware accuracy: no logit column belongs to task {t} (sample {i})"
            )));
        }
        masked.clear();
        masked.extend(cols.iter().map(|&k| row[k]));
        if columns[cols[argmax(&masked)]] == y {
            correct += 1;
        }
    }
    Ok(correct as f64 / labels.len() as f64)
}

/// Accuracy on the samples of each task's classes (`None` for a task without a sample): one
/// row `A[i][·]` of the accuracy matrix from a task-agnostic prediction table.
pub fn per_task_accuracy(
    labels: &[u32],
    predicted: &[u32],
    split: &TaskSplit,
) -> Result<Vec<Option<f64>>> {
    check_table(labels, predicted)?;
    let t = split.num_tasks();
    let mut correct = vec![0usize; t];
    let mut total = vec![0usize; t];
    for (i, (&y, &p)) in labels.iter().zip(predicted).enumerate() {
        let ty = split.task_of_checked(y, "true", i)?;
        total[ty] += 1;
        if y == p {
            correct[ty] += 1;
        }
    }
    Ok(correct
        .iter()
        .zip(&total)
        .map(|(&c, &n)| (n > 0).then(|| c as f64 / n as f64))
        .collect())
}

fn check_table(labels: &[u32], predicted: &[u32]) -> Result<()> {
    if labels.len() != predicted.len() {
        return Err(Error::invalid(format!(
            "prediction table: {} true labels but {} predictions",
            labels.len(),
            predicted.len()
        )));
    }
    if labels.is_empty() {
        return Err(Error::invalid("prediction table: no samples"));
    }
    Ok(())
}

/// Accuracy matrix `A[i][j]` (fractions), `T × T`, rows filled as tasks complete; `None` marks
/// an entry not measured.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AccuracyMatrix {
    /// `rows[i][j]` = accuracy on task j's classes after training task i.
    pub rows: Vec<Vec<Option<f64>>>,
}

impl AccuracyMatrix {
    /// An empty `num_tasks × num_tasks` matrix.
    pub fn new(num_tasks: usize) -> AccuracyMatrix {
        AccuracyMatrix {
            rows: vec![vec![None; num_tasks]; num_tasks],
        }
    }

    /// Number of tasks `T`.
    pub fn num_tasks(&self) -> usize {
        self.rows.len()
    }

    /// Entry `A[i][j]`.
    pub fn get(&self, i: usize, j: usize) -> Option<f64> {
        self.rows.get(i).and_then(|r| r.get(j)).copied().flatten()
    }

    /// Sets `A[i][j]`; errors when out of range or not a fraction in `[0, 1]`.
    pub fn set(&mut self, i: usize, j: usize, acc: f64) -> Result<()> {
        let t = self.num_tasks();
        if i >= t || j >= t {
            return Err(Error::invalid(format!(
                "accuracy matrix: entry ({i}, {j}) outside {t}×{t}"
            )));
        }
        if !(0.0..=1.0).contains(&acc) {
            return Err(Error::invalid(format!(
                "accuracy matrix: A[{i}][{j}] = {acc} is not a fraction in [0, 1]"
            )));
        }
        self.rows[i][j] = Some(acc);
        Ok(())
    }

    /// Sets row `i` from [`per_task_accuracy`]'s output (entries that are `None` stay unset).
    pub fn set_row(&mut self, i: usize, accs: &[Option<f64>]) -> Result<()> {
        if accs.len() != self.num_tasks() {
            return Err(Error::invalid(format!(
                "accuracy matrix: row of {} entries for {} tasks",
                accs.len(),
                self.num_tasks()
            )));
        }
        for (j, a) in accs.iter().enumerate() {
            if let Some(a) = a {
                self.set(i, j, *a)?;
            }
        }
        Ok(())
    }

    /// Mean of `A[t][j]` over `j ≤ t`; `None` if an entry is missing.
    pub fn average_accuracy(&self, t: usize) -> Option<f64> {
        let v: Option<Vec<f64>> = (0..=t).map(|j| self.get(t, j)).collect();
        v.map(|v| v.iter().sum::<f64>() / v.len() as f64)
    }

    /// Average forgetting after task `t` (see the module docs); `None` for `t = 0` or when
    /// `A[t][j]` or every `A[i][j]` with `j ≤ i < t` is missing.
    pub fn forgetting(&self, t: usize) -> Option<f64> {
        if t == 0 || t >= self.num_tasks() {
            return None;
        }
        let mut sum = 0.0;
        for j in 0..t {
            let best = (j..t)
                .filter_map(|i| self.get(i, j))
                .fold(None, |m: Option<f64>, a| Some(m.map_or(a, |m| m.max(a))))?;
            sum += best - self.get(t, j)?;
        }
        Some(sum / t as f64)
    }

    /// Backward transfer after task `t` (GEM); `None` for `t = 0` or a missing entry.
    pub fn bwt(&self, t: usize) -> Option<f64> {
        if t == 0 || t >= self.num_tasks() {
            return None;
        }
        let mut sum = 0.0;
        for j in 0..t {
            sum += self.get(t, j)? - self.get(j, j)?;
        }
        Some(sum / t as f64)
    }

    /// Forward transfer after task `t` (GEM) against `baseline[j]`, the accuracy of a
    /// random-init encoder's probe on task j; `None` for `t = 0`, a short baseline or a missing
    /// `A[j−1][j]`.
    pub fn fwt(&self, t: usize, baseline: &[f64]) -> Option<f64> {
        if t == 0 || t >= self.num_tasks() || baseline.len() <= t {
            return None;
        }
        let mut sum = 0.0;
        for (j, b) in baseline.iter().enumerate().take(t + 1).skip(1) {
            sum += self.get(j - 1, j)? - b;
        }
        Some(sum / t as f64)
    }
}
