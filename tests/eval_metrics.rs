//! Continual metrics on hand-built prediction tables (answers worked out in the comments).

use cromo::eval::{
    per_task_accuracy, prediction_metrics, task_aware_accuracy, AccuracyMatrix, TaskSplit,
};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

fn split() -> TaskSplit {
    TaskSplit::new(vec![vec![0, 1], vec![2, 3], vec![4, 5]]).unwrap()
}

/// Ten samples, tasks {0,1} {2,3} {4,5}:
///
/// | # | true | pred | correct | task right |
/// | 1 | 0 | 0 | y | y |
/// | 2 | 0 | 1 | n | y |
/// | 3 | 1 | 1 | y | y |
/// | 4 | 1 | 2 | n | n |
/// | 5 | 2 | 2 | y | y |
/// | 6 | 2 | 3 | n | y |
/// | 7 | 3 | 0 | n | n |
/// | 8 | 3 | 3 | y | y |
/// | 9 | 4 | 4 | y | y |
/// |10 | 5 | 5 | y | y |
///
/// correct 6/10 -> LA = 0.6; task right 8/10 -> TP = 0.8; WP = 6/8 = 0.75; TP·WP = 0.6 = LA.
/// Per task: task 0 = rows 1–4, 2 correct -> 0.5; task 1 = rows 5–8, 2 correct -> 0.5;
/// task 2 = rows 9–10, 2 correct -> 1.0.
#[test]
fn la_tp_wp_on_a_hand_built_table() {
    let truth = [0, 0, 1, 1, 2, 2, 3, 3, 4, 5];
    let pred = [0, 1, 1, 2, 2, 3, 0, 3, 4, 5];
    let m = prediction_metrics(&truth, &pred, &split()).unwrap();
    assert_eq!(m.n, 10);
    assert!(close(m.la, 0.6), "{m:?}");
    assert!(close(m.tp, 0.8), "{m:?}");
    assert!(close(m.wp, 0.75), "{m:?}");
    assert!(close(m.tp * m.wp, m.la));
    let rows = per_task_accuracy(&truth, &pred, &split()).unwrap();
    assert_eq!(rows, vec![Some(0.5), Some(0.5), Some(1.0)]);
}

/// No task predicted right: TP = 0, and WP is defined as 0 so that LA = TP·WP still holds.
#[test]
fn wp_is_zero_when_no_task_is_right() {
    let m = prediction_metrics(&[0, 2], &[2, 4], &split()).unwrap();
    assert_eq!((m.la, m.tp, m.wp), (0.0, 0.0, 0.0));
}

/// Tasks without test samples have no per-task accuracy.
#[test]
fn per_task_accuracy_leaves_unseen_tasks_empty() {
    let rows = per_task_accuracy(&[0, 1, 1], &[0, 0, 1], &split()).unwrap();
    assert_eq!(rows.len(), 3);
    assert!(close(rows[0].unwrap(), 2.0 / 3.0));
    assert_eq!(&rows[1..], &[None, None]);
}

/// Logit columns in shuffled class order [3, 0, 5, 1, 4, 2]; scores per class (others 0):
/// a. true 0: c0 = 2, c1 = 1, c4 = 5 -> global top is 4, within task {0,1} it is 0: right
/// b. true 1: c0 = 3, c1 = 2, c2 = 9 -> within {0,1}: 0: wrong
/// c. true 3: c2 = 1, c3 = 1.5       -> within {2,3}: 3: right
/// d. true 5: c0 = 7, c4 = 0.5, c5 = 0.2 -> within {4,5}: 4: wrong
/// Task-aware accuracy = 2/4 = 0.5 (task-agnostic would be 1/4: only c).
#[test]
fn task_aware_accuracy_masks_to_the_true_task() {
    let columns = [3u32, 0, 5, 1, 4, 2];
    let by_class: [[f32; 6]; 4] = [
        [2.0, 1.0, 0.0, 0.0, 5.0, 0.0],
        [3.0, 2.0, 9.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 1.5, 0.0, 0.0],
        [7.0, 0.0, 0.0, 0.0, 0.5, 0.2],
    ];
    let logits: Vec<f32> = by_class
        .iter()
        .flat_map(|row| columns.iter().map(move |&c| row[c as usize]))
        .collect();
    let truth = [0, 1, 3, 5];
    let acc = task_aware_accuracy(&logits, &columns, &truth, &split()).unwrap();
    assert!(close(acc, 0.5), "{acc}");
    // A probe lacking task 2's columns cannot score sample d.
    let cols4 = [0u32, 1, 2, 3];
    let l4: Vec<f32> = by_class.iter().flat_map(|r| r[..4].to_vec()).collect();
    assert!(task_aware_accuracy(&l4, &cols4, &truth, &split()).is_err());
}

/// A (3 tasks, 0-based, rows = after task i):
///
/// |     | j=0 | j=1  | j=2 |
/// | i=0 | 0.6 | 0.75 |  –  |
/// | i=1 | 0.8 | 0.7  | 0.4 |
/// | i=2 | 0.5 | 0.6  | 0.9 |
///
/// (A[0][1] and A[1][2] are forward entries: the task's classes probed before it is trained.)
/// Forgetting after t=2: j=0: max(A00, A10) − A20 = 0.8 − 0.5 = 0.3; j=1: max(A11) − A21 =
///   0.7 − 0.6 = 0.1 (A01 = 0.75 was before task 1 was learned and is not used); mean 0.2.
/// Forgetting after t=1: j=0: A00 − A10 = 0.6 − 0.8 = −0.2 (the task improved).
/// BWT after t=2: ((A20 − A00) + (A21 − A11)) / 2 = (−0.1 − 0.1) / 2 = −0.1; after t=1: 0.2.
/// FWT after t=2 with random-init baseline b = [0.1, 0.2, 0.25]:
///   ((A01 − b1) + (A12 − b2)) / 2 = (0.55 + 0.15) / 2 = 0.35.
/// Average accuracy after t=2: (0.5 + 0.6 + 0.9) / 3 = 2/3.
#[test]
fn accuracy_matrix_summaries() {
    let mut a = AccuracyMatrix::new(3);
    a.set_row(0, &[Some(0.6), Some(0.75), None]).unwrap();
    a.set_row(1, &[Some(0.8), Some(0.7), Some(0.4)]).unwrap();
    a.set_row(2, &[Some(0.5), Some(0.6), Some(0.9)]).unwrap();
    assert!(close(a.forgetting(2).unwrap(), 0.2));
    assert!(close(a.forgetting(1).unwrap(), -0.2));
    assert_eq!(a.forgetting(0), None);
    assert!(close(a.bwt(2).unwrap(), -0.1));
    assert!(close(a.bwt(1).unwrap(), 0.2));
    let b = [0.1, 0.2, 0.25];
    assert!(close(a.fwt(2, &b).unwrap(), 0.35));
    assert!(close(a.fwt(1, &b).unwrap(), 0.55));
    assert!(close(a.average_accuracy(2).unwrap(), 2.0 / 3.0));
    assert!(close(a.average_accuracy(0).unwrap(), 0.6));
}

#[test]
fn accuracy_matrix_without_forward_entries() {
    // Rows filled as tasks complete with the probe over seen classes only.
    let mut a = AccuracyMatrix::new(3);
    a.set(0, 0, 0.9).unwrap();
    assert_eq!(a.forgetting(1), None, "row 1 not filled yet");
    a.set_row(1, &[Some(0.7), Some(0.8), None]).unwrap();
    // FWT needs A[0][1], absent.
    assert_eq!(a.fwt(1, &[0.5, 0.5, 0.5]), None);
    assert!(close(a.forgetting(1).unwrap(), 0.2)); // 0.9 − 0.7
    assert!(close(a.bwt(1).unwrap(), -0.2));
    assert!(a.set(3, 0, 0.5).is_err());
    assert!(a.set(0, 0, 1.5).is_err());
    assert!(a.set_row(0, &[Some(0.5)]).is_err());
    // Serde round trip (the report stores it).
    let json = serde_json::to_string(&a).unwrap();
    let back: AccuracyMatrix = serde_json::from_str(&json).unwrap();
    assert_eq!(back, a);
}

#[test]
fn splits_and_tables_are_checked() {
    assert!(TaskSplit::new(vec![vec![0, 1], vec![1, 2]]).is_err());
    assert!(TaskSplit::new(vec![vec![0], vec![]]).is_err());
    assert!(TaskSplit::new(vec![]).is_err());
    let s = split();
    assert_eq!(s.task_of(3), Some(1));
    assert_eq!(s.task_of(9), None);
    assert_eq!(s.classes_up_to(1), vec![0, 1, 2, 3]);
    assert!(prediction_metrics(&[0, 1], &[0], &s).is_err());
    assert!(prediction_metrics(&[], &[], &s).is_err());
    let e = prediction_metrics(&[9], &[0], &s).unwrap_err().to_string();
    assert!(e.contains("class 9"), "{e}");
}

/// The data side's seeded split converts with the same class sets per task.
#[test]
fn converts_from_the_data_split() {
    let data = cromo::data::TaskSplit::new(10, 5, 42).unwrap();
    let split = TaskSplit::from(&data);
    assert_eq!(split.num_tasks(), 5);
    for t in 0..5 {
        assert_eq!(split.tasks()[t], data.classes(t).unwrap());
        for &c in data.classes(t).unwrap() {
            assert_eq!(split.task_of(c), Some(t));
        }
    }
}
