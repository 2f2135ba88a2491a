"""Cairn's /v1/chat/completions through the official OpenAI Python client.

Any OpenAI client must work unchanged against Cairn: these tests use `openai` as an
application would (base_url pointed at Cairn), with the scripted model behind Cairn
deciding what "the model" answers. Each test also checks the run Cairn recorded: the
run id it returns must name a trail in the audit ledger (/v1/audit/runs/{id}).
"""

import json

import openai
import pytest

from scripted_model import offered_tools, text, tool_call


@pytest.fixture()
def client(cairn):
    # The development identity needs no key; the client insists on one.
    return openai.OpenAI(base_url=f"{cairn.url}/v1", api_key="unused", max_retries=0, timeout=120)


def run_id_of(response):
    """The run id Cairn reports with a completion (or a stream chunk)."""
    extra = response.model_extra or {}
    run_id = extra.get("cairn_run_id") or (extra.get("cairn") or {}).get("run_id")
    assert run_id, f"no run id in {response}"
    return run_id


def trail(cairn, run_id):
    status, body = cairn.get(f"/v1/audit/runs/{run_id}")
    assert status == 200
    assert body["run"]["id"] == run_id
    return [step["step"] for step in body["steps"]]


def kinds(steps):
    return [s["kind"] for s in steps]


def test_a_plain_completion(cairn, client, model):
    model.push(text("Cairn marks the trail."))
    completion = client.chat.completions.create(
        model="cairn", messages=[{"role": "user", "content": "What is a cairn?"}]
    )
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Cairn marks the trail."
    assert choice.finish_reason == "stop"
    steps = trail(cairn, run_id_of(completion))
    assert kinds(steps)[0] == "user_message"
    assert "final_answer" in kinds(steps)


def test_a_streamed_completion(cairn, client, model):
    model.push(text("Every step leaves a stone."))
    stream = client.chat.completions.create(
        model="cairn",
        messages=[{"role": "user", "content": "Tell me about the ledger."}],
        stream=True,
    )
    chunks = list(stream)
    assert chunks, "the stream was empty"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "Every step leaves a stone."
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    run_ids = {run_id_of(c) for c in chunks}
    assert len(run_ids) == 1, run_ids
    assert "final_answer" in kinds(trail(cairn, run_ids.pop()))


def test_cairn_runs_a_plugin_before_answering(cairn, client, model):
    assert "tasks" in cairn.plugins, "the tasks plugin is installed"

    def list_tasks(request):
        names = offered_tools(request)
        assert "list_tasks" in names, f"list_tasks was not offered: {names}"
        return "list_tasks"

    model.push(tool_call(list_tasks, {}), text("You have no open tasks."))
    completion = client.chat.completions.create(
        model="cairn", messages=[{"role": "user", "content": "Which tasks are on my to-do list?"}]
    )
    choice = completion.choices[0]
    assert choice.message.content == "You have no open tasks."
    assert choice.finish_reason == "stop"
    assert not choice.message.tool_calls
    # The model saw the tool's result before it answered.
    second = model.requests[1]["messages"]
    results = [m for m in second if m["role"] == "tool"]
    assert results and "count" in results[0]["content"], second
    steps = trail(cairn, run_id_of(completion))
    assert kinds(steps)[:1] == ["user_message"]
    calls = [s for s in steps if s["kind"] == "tool_call"]
    assert [(c["cairn.plugin.id"], c["gen_ai.tool.name"]) for c in calls] == [("tasks", "list_tasks")]
    assert "tool_result" in kinds(steps)
    assert kinds(steps)[-1] == "final_answer"


def test_client_tools_come_back_as_tool_calls(cairn, client, model):
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }

    def get_weather(request):
        assert "get_weather" in offered_tools(request), offered_tools(request)
        return "get_weather"

    model.push(tool_call(get_weather, {"city": "Oslo"}))
    completion = client.chat.completions.create(
        model="cairn",
        messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
        tools=[weather],
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert len(calls) == 1
    assert calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Oslo"}
    assert calls[0].id
    steps = trail(cairn, run_id_of(completion))
    assert "tool_call" in kinds(steps)
    # The call was handed to the client, not run on the server.
    assert "tool_result" not in kinds(steps)


def test_the_models_are_listed_and_retrieved(client):
    # Clients and frameworks list the models at start-up (issue 13): the deployment's one
    # model, by the name runs record, and an unknown id is the client's NotFoundError.
    models = client.models.list()
    assert [m.id for m in models.data] == ["scripted"]
    assert models.data[0].object == "model"
    assert models.data[0].owned_by == "cairn"
    assert models.data[0].created > 0
    assert client.models.retrieve("scripted") == models.data[0]
    with pytest.raises(openai.NotFoundError) as refused:
        client.models.retrieve("gpt-4o")
    assert "gpt-4o" in refused.value.body["message"]


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    "choice",
    ["required", {"type": "function", "function": {"name": "get_weather"}}],
    ids=["required", "named"],
)
def test_tool_choice_forces_a_call(client, model, choice):
    # Both were refused with 400 before issue 13; the provider behind Cairn is told to
    # call, and a named function is the only one it is offered.
    def get_weather(request):
        assert request["tool_choice"] == choice, request
        if isinstance(choice, dict):
            assert offered_tools(request) == ["get_weather"], offered_tools(request)
        else:
            assert {"get_weather", "get_time"} <= set(offered_tools(request))
        return "get_weather"

    model.push(tool_call(get_weather, {"city": "Oslo"}))
    completion = client.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "Oslo?"}],
        tools=[WEATHER, TIME],
        tool_choice=choice,
    )
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_tool_choice_naming_an_unknown_function_is_refused(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="scripted",
            messages=[{"role": "user", "content": "Oslo?"}],
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_forecast"}},
        )
    assert refused.value.body["field"] == "tool_choice.function.name"


def test_camel_case_and_dashed_function_names_round_trip(client, model):
    # Frameworks generate such names (OpenAI allows ^[a-zA-Z0-9_-]{1,64}$); they were
    # refused. Cairn offers them in its own form and answers with the client's names.
    def get_weather(request):
        assert {"get_weather", "get_time"} <= set(offered_tools(request)), offered_tools(request)
        return "get_weather"

    model.push(tool_call(get_weather, {"city": "Oslo"}))
    completion = client.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "Oslo?"}],
        tools=[
            {**WEATHER, "function": {**WEATHER["function"], "name": "getWeather"}},
            {**TIME, "function": {**TIME["function"], "name": "get-time"}},
        ],
    )
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.choices[0].message.tool_calls[0].function.name == "getWeather"
