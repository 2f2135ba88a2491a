//! A personal task list kept in the plugin key-value store.
//!
//! The host scopes the store to (tenant, plugin, user), so every user has their own list
//! and nothing here needs to know who the user is. Each task is one JSON value under
//! `task/<number>`, zero-padded so that listing keys returns tasks in creation order;
//! `meta/next_id` holds the next number.

use cairn_sdk::prelude::*;

/// The longest title accepted, in characters.
pub const MAX_TITLE_CHARS: usize = 200;

const TASK_PREFIX: &str = "task/";
const NEXT_ID_KEY: &str = "meta/next_id";

/// How urgent a task is.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Can wait.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Do this first.
    High,
}

/// A task on the user's list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Task {
    /// The task's id, used to complete or delete it.
    pub id: String,
    /// What to do.
    pub title: String,
    /// Due date (YYYY-MM-DD), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    /// How urgent the task is.
    #[serde(default)]
    pub priority: Priority,
    /// Whether the task is done.
    pub done: bool,
}

/// Arguments of `add_task`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddTask {
    /// What to do, e.g. "Call Anna about the budget".
    pub title: String,
    /// Due date as YYYY-MM-DD, e.g. "2027-03-12".
    pub due: Option<String>,
    /// How urgent the task is; "normal" when omitted.
    pub priority: Option<Priority>,
}

/// Which tasks `list_tasks` returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusFilter {
    /// Tasks not done yet (the default).
    #[default]
    Open,
    /// Finished tasks.
    Done,
    /// Every task.
    All,
}

/// Arguments of `list_tasks`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTasks {
    /// "open" (default), "done" or "all".
    pub status: Option<StatusFilter>,
    /// Only tasks due on or before this date (YYYY-MM-DD).
    pub due_before: Option<String>,
}

/// The result of `list_tasks`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskList {
    /// Matching tasks: earliest due date first (undated last), then higher priority,
    /// then oldest.
    pub tasks: Vec<Task>,
    /// How many tasks matched.
    pub count: usize,
}

/// Arguments of `complete_task` and `delete_task`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRef {
    /// The task's id, as returned by `add_task` or `list_tasks`.
    pub id: String,
}

/// The result of `delete_task`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Deleted {
    /// The task that was removed.
    pub deleted: Task,
}

/// Adds a task to the user's list.
pub fn add_task(input: AddTask) -> Result<Task, ToolError> {
    let title = input.title.trim();
    if title.is_empty() {
        return Err(ToolError::invalid_input("`title` must not be empty"));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(ToolError::invalid_input(format!(
            "`title` is longer than {MAX_TITLE_CHARS} characters"
        )));
    }
    let due = input
        .due
        .as_deref()
        .map(|d| parse_date("due", d))
        .transpose()?;
    let number: u64 = kv::get_json(NEXT_ID_KEY)?.unwrap_or(1);
    kv::set_json(NEXT_ID_KEY, &(number + 1))?;
    let task = Task {
        id: number.to_string(),
        title: title.to_owned(),
        due,
        priority: input.priority.unwrap_or_default(),
        done: false,
    };
    kv::set_json(&key(number), &task)?;
    log::debug(&format!("added task {}", task.id));
    Ok(task)
}

/// Lists the user's tasks.
pub fn list_tasks(input: ListTasks) -> Result<TaskList, ToolError> {
    let status = input.status.unwrap_or_default();
    let due_before = input
        .due_before
        .as_deref()
        .map(|d| parse_date("due_before", d))
        .transpose()?;
    let mut tasks = Vec::new();
    for k in kv::list_keys(TASK_PREFIX)? {
        let Some(task) = kv::get_json::<Task>(&k)? else {
            continue;
        };
        let status_ok = match status {
            StatusFilter::Open => !task.done,
            StatusFilter::Done => task.done,
            StatusFilter::All => true,
        };
        // ISO dates compare correctly as strings.
        let due_ok = match (&due_before, &task.due) {
            (None, _) => true,
            (Some(limit), Some(due)) => due <= limit,
            (Some(_), None) => false,
        };
        if status_ok && due_ok {
            tasks.push(task);
        }
    }
    tasks.sort_by(|a, b| {
        let due = |t: &Task| (t.due.is_none(), t.due.clone());
        due(a)
            .cmp(&due(b))
            .then(b.priority.cmp(&a.priority))
            .then(id_number(&a.id).cmp(&id_number(&b.id)))
    });
    Ok(TaskList {
        count: tasks.len(),
        tasks,
    })
}

/// Marks a task done; completing a done task changes nothing.
pub fn complete_task(input: TaskRef) -> Result<Task, ToolError> {
    let (k, mut task) = load(&input.id)?;
    if !task.done {
        task.done = true;
        kv::set_json(&k, &task)?;
    }
    Ok(task)
}

/// Removes a task for good.
pub fn delete_task(input: TaskRef) -> Result<Deleted, ToolError> {
    let (k, task) = load(&input.id)?;
    kv::delete(&k)?;
    Ok(Deleted { deleted: task })
}

cairn_sdk::plugin! { tools: [add_task, list_tasks, complete_task, delete_task] }

fn key(number: u64) -> String {
    format!("{TASK_PREFIX}{number:020}")
}

fn id_number(id: &str) -> Option<u64> {
    let id = id.trim();
    let id = id.strip_prefix('#').unwrap_or(id);
    id.parse().ok().filter(|n| *n > 0)
}

fn load(id: &str) -> Result<(String, Task), ToolError> {
    let not_found = || {
        ToolError::not_found(format!(
            "there is no task with id `{id}`; list_tasks shows the ids"
        ))
    };
    let number = id_number(id).ok_or_else(not_found)?;
    let k = key(number);
    let task = kv::get_json::<Task>(&k)?.ok_or_else(not_found)?;
    Ok((k, task))
}

/// Checks that `value` is a real calendar date written YYYY-MM-DD.
fn parse_date(field: &str, value: &str) -> Result<String, ToolError> {
    let value = value.trim();
    let bad = || {
        ToolError::invalid_input(format!(
            "`{field}` must be a date written YYYY-MM-DD, e.g. 2027-03-12; got `{value}`"
        ))
    };
    let b = value.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let num = |s: &str| -> Result<u32, ToolError> {
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (y, m, d) = (num(&value[0..4])?, num(&value[5..7])?, num(&value[8..10])?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if d == 0 || d > days {
        return Err(bad());
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(title: &str, due: Option<&str>, priority: Option<Priority>) -> Task {
        add_task(AddTask {
            title: title.into(),
            due: due.map(Into::into),
            priority,
        })
        .unwrap()
    }

    fn list(status: Option<StatusFilter>) -> Vec<String> {
        list_tasks(ListTasks {
            status,
            due_before: None,
        })
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| t.title)
        .collect()
    }

    #[test]
    fn add_list_complete_delete() {
        let a = add("  Call Anna  ", Some("2027-03-12"), None);
        assert_eq!(a.id, "1");
        assert_eq!(a.title, "Call Anna");
        assert_eq!(a.priority, Priority::Normal);
        assert!(!a.done);
        let b = add("Send report", None, Some(Priority::High));
        assert_eq!(b.id, "2");

        assert_eq!(list(None), ["Call Anna", "Send report"]);
        let done = complete_task(TaskRef { id: "1".into() }).unwrap();
        assert!(done.done);
        // Idempotent.
        assert_eq!(complete_task(TaskRef { id: "#1".into() }).unwrap(), done);
        assert_eq!(list(None), ["Send report"]);
        assert_eq!(list(Some(StatusFilter::Done)), ["Call Anna"]);
        assert_eq!(list(Some(StatusFilter::All)).len(), 2);

        let gone = delete_task(TaskRef { id: "2".into() }).unwrap();
        assert_eq!(gone.deleted.title, "Send report");
        assert_eq!(list(Some(StatusFilter::All)), ["Call Anna"]);
        // Ids are not reused after a delete.
        assert_eq!(add("Next", None, None).id, "3");
    }

    #[test]
    fn ordering_by_due_then_priority_then_age() {
        add("undated high", None, Some(Priority::High));
        add("late", Some("2027-05-01"), None);
        add("early low", Some("2027-01-01"), Some(Priority::Low));
        add("early high", Some("2027-01-01"), Some(Priority::High));
        add("undated normal", None, None);
        assert_eq!(
            list(None),
            [
                "early high",
                "early low",
                "late",
                "undated high",
                "undated normal"
            ]
        );
    }

    #[test]
    fn ordering_survives_more_than_nine_tasks() {
        for i in 1..=12 {
            add(&format!("t{i}"), None, None);
        }
        let titles = list(None);
        assert_eq!(titles[9], "t10");
        assert_eq!(titles[11], "t12");
    }

    #[test]
    fn due_before_filter() {
        add("a", Some("2027-03-01"), None);
        add("b", Some("2027-03-20"), None);
        add("c", None, None);
        let r = list_tasks(ListTasks {
            status: None,
            due_before: Some("2027-03-12".into()),
        })
        .unwrap();
        assert_eq!(r.count, 1);
        assert_eq!(r.tasks[0].title, "a");
    }

    #[test]
    fn rejects_bad_input() {
        for title in ["", "   "] {
            let e = add_task(AddTask {
                title: title.into(),
                due: None,
                priority: None,
            })
            .unwrap_err();
            assert_eq!(e.code, "invalid_input");
        }
        let long = "x".repeat(MAX_TITLE_CHARS + 1);
        assert!(
            add_task(AddTask {
                title: long,
                due: None,
                priority: None
            })
            .is_err()
        );
        for due in [
            "tomorrow",
            "2027-02-29",
            "2027-13-01",
            "2027-1-1",
            "2027-04-31",
            "２０２７-01-01",
        ] {
            let e = add_task(AddTask {
                title: "x".into(),
                due: Some(due.into()),
                priority: None,
            })
            .unwrap_err();
            assert_eq!(e.code, "invalid_input", "{due}");
            assert!(e.message.contains("YYYY-MM-DD"), "{}", e.message);
        }
        assert!(parse_date("due", "2028-02-29").is_ok());
        assert!(parse_date("due", "2000-02-29").is_ok());
        assert!(parse_date("due", "1900-02-29").is_err());
        // Nothing was stored by the failed calls.
        assert!(list(Some(StatusFilter::All)).is_empty());
    }

    #[test]
    fn unknown_ids_are_not_found() {
        add("a", None, None);
        for id in ["9", "0", "abc", "", "-1", "1.0"] {
            let e = complete_task(TaskRef { id: id.into() }).unwrap_err();
            assert_eq!(e.code, "not_found", "{id}");
            let e = delete_task(TaskRef { id: id.into() }).unwrap_err();
            assert_eq!(e.code, "not_found", "{id}");
        }
    }

    #[test]
    fn json_calls_as_the_host_makes_them() {
        let out = call_tool(
            "add_task",
            r#"{"title":"Pay rent","due":"2027-04-01","priority":"high"}"#,
        )
        .unwrap();
        assert_eq!(
            out,
            r#"{"id":"1","title":"Pay rent","due":"2027-04-01","priority":"high","done":false}"#
        );
        let e = call_tool("add_task", r#"{"title":"x","priority":"urgent"}"#).unwrap_err();
        assert_eq!(e.code, "invalid_input");
        assert!(e.message.contains("`priority`"), "{}", e.message);
        let e = call_tool("add_task", r#"{"name":"x"}"#).unwrap_err();
        assert_eq!(e.code, "invalid_input");
        let out = call_tool("list_tasks", "{}").unwrap();
        assert!(out.contains(r#""count":1"#), "{out}");
        let e = call_tool("list_tasks", r#"{"status":"pending"}"#).unwrap_err();
        assert!(e.message.contains("`status`"), "{}", e.message);
    }

    #[test]
    fn corrupt_store_is_a_storage_error() {
        add("a", None, None);
        kv::set(&key(1), b"{oops").unwrap();
        let e = list_tasks(ListTasks {
            status: None,
            due_before: None,
        })
        .unwrap_err();
        assert_eq!(e.code, "storage_error");
    }

    #[test]
    fn quota_exhaustion_is_reported() {
        cairn_sdk::testing::set_kv_quota(Some(200));
        let mut last = Ok(());
        for i in 0..20 {
            last = add_task(AddTask {
                title: format!("task {i}"),
                due: None,
                priority: None,
            })
            .map(|_| ());
            if last.is_err() {
                break;
            }
        }
        assert_eq!(last.unwrap_err().code, "quota_exceeded");
    }
}
