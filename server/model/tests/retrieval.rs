//! Tool retrieval with the real all-MiniLM-L6-v2 files. They are required: a missing file
//! fails the test with the command that fetches it, never a silent skip.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use cairn_model::retrieval::{
    DEFAULT_LEXICAL_WEIGHT, EMBEDDING_DIM, IndexOptions, Scoring, SentenceEmbedder, ToolCandidate,
    ToolIndex,
};

fn embedder() -> Arc<SentenceEmbedder> {
    static EMBEDDER: OnceLock<Arc<SentenceEmbedder>> = OnceLock::new();
    EMBEDDER
        .get_or_init(|| {
            let dir = SentenceEmbedder::default_dir();
            for file in ["model.safetensors", "tokenizer.json", "config.json"] {
                assert!(
                    dir.join(file).is_file(),
                    "{} is missing: run scripts/fetch-models",
                    dir.join(file).display()
                );
            }
            Arc::new(SentenceEmbedder::load(&dir).expect("load all-MiniLM-L6-v2"))
        })
        .clone()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f32]) -> f32 {
    a.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// The four example plugins' tools, read from their manifests as plain JSON (the model
/// crate does not depend on cairn-manifest).
fn example_tools() -> Vec<ToolCandidate> {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
    let mut tools = Vec::new();
    for name in ["table", "doctext", "tasks", "crm"] {
        let path: PathBuf = plugins.join(name).join("cairn-plugin.json");
        let text = std::fs::read_to_string(&path).expect("read manifest");
        let manifest: serde_json::Value = serde_json::from_str(&text).expect("manifest JSON");
        for tool in manifest["tools"].as_array().expect("tools") {
            tools.push(ToolCandidate {
                plugin: manifest["id"].as_str().expect("id").to_owned(),
                name: tool["name"].as_str().expect("name").to_owned(),
                description: tool["description"]
                    .as_str()
                    .expect("description")
                    .to_owned(),
                examples: tool["examples"]
                    .as_array()
                    .map(|e| {
                        e.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
    }
    tools
}

#[test]
fn a_missing_model_names_the_fetch_script() {
    let err = SentenceEmbedder::load(Path::new("/nonexistent/all-MiniLM-L6-v2"))
        .expect_err("no files there");
    assert!(
        err.to_string().contains("run scripts/fetch-models"),
        "{err}"
    );
}

#[test]
fn embeddings_are_unit_length_384_wide_and_deterministic() {
    let e = embedder();
    let batch = e
        .embed_batch(&["How do I bake bread?", "quarterly sales report", "hi"])
        .expect("embed");
    assert_eq!(batch.len(), 3);
    for v in &batch {
        assert_eq!(v.len(), EMBEDDING_DIM);
        assert!((norm(v) - 1.0).abs() < 1e-4, "norm {}", norm(v));
    }
    // Alone or padded in a batch, a text embeds the same (the mask hides the padding).
    let alone = e.embed("hi").expect("embed");
    assert!(cosine(&alone, &batch[2]) > 0.9999);
    assert_eq!(alone, e.embed("hi").expect("embed"));
}

#[test]
fn similarities_match_the_sentence_transformers_reference() {
    // The sentence-transformers quickstart's figures for all-MiniLM-L6-v2.
    let v = embedder()
        .embed_batch(&[
            "The weather is lovely today.",
            "It's so sunny outside!",
            "He drove to the stadium.",
        ])
        .expect("embed");
    for (a, b, want) in [(0, 1, 0.6660), (0, 2, 0.1046), (1, 2, 0.1411)] {
        let got = cosine(&v[a], &v[b]);
        assert!(
            (got - want).abs() < 1e-3,
            "cos({a}, {b}) = {got}, reference {want}"
        );
    }
}

#[test]
fn clear_pairs_order_as_the_reference_model_does() {
    let e = embedder();
    let pairs = [
        (
            "How do I bake bread?",
            "bread recipe",
            "quarterly sales report",
        ),
        (
            "The cat sits on the mat",
            "A kitten is resting on a rug",
            "Interest rates rose again this quarter",
        ),
        (
            "remind me to call the dentist",
            "add a task to my to-do list",
            "sort the table by revenue",
        ),
    ];
    for (anchor, near, far) in pairs {
        let v = e.embed_batch(&[anchor, near, far]).expect("embed");
        let (s_near, s_far) = (cosine(&v[0], &v[1]), cosine(&v[0], &v[2]));
        assert!(
            s_near > s_far + 0.1,
            "{anchor:?}: {near:?} {s_near} vs {far:?} {s_far}"
        );
    }
}

#[test]
fn ranking_picks_the_right_tool_for_unambiguous_requests() {
    let index = ToolIndex::build(embedder(), &example_tools()).expect("index");
    assert_eq!(index.len(), 14);
    for (request, tool) in [
        ("remind me to water the plants on Sunday", "add_task"),
        ("what's Jane Doe's email in the CRM?", "search_contacts"),
        ("how many words are in this text: hello world", "word_count"),
        ("total revenue per country from this CSV", "summarize"),
        ("which deadlines does this contract mention?", "find_dates"),
    ] {
        let ranked = index.rank(request, 3).expect("rank");
        assert_eq!(ranked[0].name, tool, "{request:?} ranked {ranked:?}");
        assert!(!index.probably_no_tool(&ranked), "{request:?}: {ranked:?}");
    }
    let chat = index
        .rank("What is the capital of France?", 3)
        .expect("rank");
    assert!(index.probably_no_tool(&chat), "{chat:?}");
}

#[test]
fn k_is_respected_and_scores_descend() {
    let index = ToolIndex::build(embedder(), &example_tools()).expect("index");
    for k in [0, 1, 3, 14, 50] {
        let ranked = index.rank("sort this table", k).expect("rank");
        assert_eq!(ranked.len(), k.min(14));
        assert!(ranked.windows(2).all(|w| w[0].score >= w[1].score));
    }
}

#[test]
fn rebuilding_embeds_only_new_or_changed_texts() {
    let mut tools = example_tools();
    let texts: usize = tools.iter().map(|t| 1 + t.examples.len()).sum();
    let first = ToolIndex::build(embedder(), &tools).expect("index");
    assert_eq!(first.build_stats().embedded, texts);

    let same = first.rebuild(&tools).expect("rebuild");
    assert_eq!(same.build_stats().embedded, 0);
    assert_eq!(same.build_stats().reused, texts);

    // A newly installed plugin's tool, and one edited example.
    tools.push(ToolCandidate {
        plugin: "calendar".into(),
        name: "create_event".into(),
        description: "Creates a calendar event.".into(),
        examples: vec!["schedule a meeting with Bob on Monday".into()],
    });
    tools[0].examples[0] = "an edited example".into();
    let grown = same.rebuild(&tools).expect("rebuild");
    assert_eq!(grown.build_stats().embedded, 3);
    assert_eq!(grown.len(), 15);
    let ranked = grown
        .rank("set up a meeting with Alice on Tuesday", 1)
        .expect("rank");
    assert_eq!(ranked[0].name, "create_event");
}

#[test]
fn ranking_is_deterministic_under_every_scoring() {
    let index = ToolIndex::build(embedder(), &example_tools()).expect("index");
    for scoring in [Scoring::Max, Scoring::Blend { max_weight: 0.7 }] {
        let index = index.with_options(IndexOptions {
            scoring,
            ..index.options()
        });
        let a = index.rank("list my open tasks", 5).expect("rank");
        let b = index.rank("list my open tasks", 5).expect("rank");
        assert_eq!(a, b);
        assert_eq!(a[0].name, "list_tasks");
    }
}

#[test]
fn pasted_rows_do_not_move_the_ranking() {
    let index = ToolIndex::build(embedder(), &example_tools()).expect("index");
    let instruction = "arrange these by weight, heaviest first:";
    let pasted = format!(
        "{instruction}\nparcel,weight,city\nP-1,12.5,Lyon\nP-2,3.1,Porto\nP-3,7.0,Graz\nP-4,0.4,Oslo"
    );
    let prepared = index.prepare(&pasted).expect("prepare");
    assert_eq!(prepared.text, instruction);
    let alone = index.rank(instruction, 3).expect("rank");
    let with_rows = index.rank_prepared(&prepared, 3);
    assert_eq!(alone, with_rows);
    assert_eq!(with_rows[0].name, "sort_rows", "{with_rows:?}");

    // The scoring from before embeds the rows too.
    let before = index.with_options(IndexOptions::SEMANTIC_ONLY);
    assert_eq!(before.prepare(&pasted).expect("prepare").text, pasted);
}

#[test]
fn a_score_is_the_semantic_part_plus_the_weighted_lexical_part() {
    let index = ToolIndex::build(embedder(), &example_tools()).expect("index");
    assert_eq!(index.options().lexical_weight, DEFAULT_LEXICAL_WEIGHT);
    let ranked = index
        .rank("erase the duplicate task from my list", 14)
        .expect("rank");
    for t in &ranked {
        let expected = t.semantic + DEFAULT_LEXICAL_WEIGHT * t.lexical;
        assert!((t.score - expected).abs() < 1e-6, "{t:?}");
        assert!((0.0..=1.0).contains(&t.lexical), "{t:?}");
    }
    assert!(ranked.iter().any(|t| t.lexical > 0.0), "{ranked:?}");
    // No tool's texts hold a word of small talk (stopwords aside).
    let chat = index.rank("hello there, how are you?", 14).expect("rank");
    assert!(chat.iter().all(|t| t.lexical == 0.0), "{chat:?}");
    let semantic_only = index
        .with_options(IndexOptions {
            lexical_weight: 0.0,
            ..index.options()
        })
        .rank("erase the duplicate task from my list", 14)
        .expect("rank");
    assert!(semantic_only.iter().all(|t| t.score == t.semantic));
}

#[test]
fn the_verb_separates_tools_that_share_their_topic() {
    let index = ToolIndex::build(embedder(), &example_tools()).expect("index");
    // all-MiniLM puts sort_rows a hair ahead (0.317 vs 0.315 when written); "keep" is a
    // word only filter_rows' texts use.
    let ranked = index
        .rank("keep only the rows with a score above ninety", 3)
        .expect("rank");
    assert_eq!(ranked[0].name, "filter_rows", "{ranked:?}");
    assert!(ranked[0].lexical > ranked[1].lexical, "{ranked:?}");
    for (request, tool) in [
        ("sort the attached sheet by the team column", "sort_rows"),
        ("I want task 4 deleted", "delete_task"),
        ("task 4 is completed", "complete_task"),
    ] {
        let ranked = index.rank(request, 3).expect("rank");
        assert_eq!(ranked[0].name, tool, "{request:?} ranked {ranked:?}");
    }
}

#[tokio::test]
async fn async_ranking_runs_off_the_executor() {
    let index = ToolIndex::build(embedder(), &example_tools()).expect("index");
    let ranked = index
        .rank_async("show my open tasks please".into(), 2)
        .await
        .expect("rank");
    assert_eq!(ranked.len(), 2);
    assert_eq!(ranked[0].name, "list_tasks");
}

#[test]
/// Ranking over hundreds of tools still finds the right one. How fast it is belongs to the
/// retrieval bench (BENCHMARKS.md, "Retrieval alone"), not here: a timed assertion failed
/// CI on a 2-core machine at load 12 (52 ms against a 50 ms bound) while proving nothing
/// about the code.
fn top_k_over_hundreds_of_tools_finds_the_right_one() {
    let e = embedder();
    let real = example_tools();
    // 500 synthetic tools that share texts with the real ones, plus the real 14.
    let mut tools: Vec<ToolCandidate> = (0..500)
        .map(|i| {
            let base = &real[i % real.len()];
            ToolCandidate {
                plugin: format!("synthetic{}", i / 10),
                name: format!("{}_{i}", base.name),
                description: base.description.clone(),
                examples: base.examples.clone(),
            }
        })
        .collect();
    tools.extend(real);
    let index = ToolIndex::build(e, &tools).expect("index");
    assert_eq!(index.len(), 514);

    let query = index.prepare("sum the hours per project").expect("prepare");
    let started = Instant::now();
    let runs = 100;
    for _ in 0..runs {
        assert_eq!(index.rank_prepared(&query, 5).len(), 5);
    }
    let score_ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(runs);

    let started = Instant::now();
    let ranked = index.rank("sum the hours per project", 5).expect("rank");
    let total_ms = started.elapsed().as_secs_f64() * 1000.0;
    eprintln!("514 tools: scoring {score_ms:.3} ms per query; embed + score {total_ms:.1} ms");
    assert_eq!(ranked.len(), 5);
    assert!(ranked[0].name.starts_with("summarize"), "{ranked:?}");
}
