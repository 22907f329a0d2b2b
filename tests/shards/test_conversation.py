"""Conversations from annotation rows: turn formats, precedence between layers, bad rows."""

import json

import pytest

from longvid.shards.conversation import (
    Annotations,
    build_conversation,
    clip_turns,
    item_turn,
    parse_layer_refs,
    video_turns,
)


def _clip(key, clip_id, start, end, text):
    return {"key": key, "clip_id": clip_id, "start": start, "end": end, "value": text, "value_type": "text"}


def _video(key, item):
    return {"key": key, "clip_id": None, "start": 0.0, "end": 60.0, "value": json.dumps(item), "value_type": "json"}


def test_dense_description_in_time_order_when_no_video_level_rows():
    ann = Annotations()
    ann.add(_clip("k", "k_b", 10.0, 20.0, "a dog runs"))
    ann.add(_clip("k", "k_a", 0.0, 10.0, "a cat sleeps"))
    for spans in ann.clips_of.values():
        spans.sort()
    (question, answer), = video_turns(ann, "k")
    assert answer.splitlines() == ["[0.0s-10.0s] a cat sleeps", "[10.0s-20.0s] a dog runs"]
    assert clip_turns(ann, "k", "k_b") == [("Describe this video.", "a dog runs")]
    assert video_turns(ann, "other") == [] and clip_turns(ann, "k", "nope") == []


def test_later_layer_caption_replaces_earlier_everywhere():
    ann = Annotations()
    ann.add(_clip("k", "k_a", 0.0, 5.0, "old caption"))
    ann.add(_clip("k", "k_a", 0.0, 5.0, "new caption"))
    assert clip_turns(ann, "k", "k_a")[0][1] == "new caption"
    assert video_turns(ann, "k")[0][1] == "[0.0s-5.0s] new caption"


def test_video_level_items_become_turns_and_bad_ones_are_dropped():
    ann = Annotations()
    ann.add(_video("k", {"task": "summary", "text": "A cooking show."}))
    ann.add(_video("k", {"task": "event_order", "question": "Order these.", "answer": [1, 0],
                         "events": [{"description": "plate"}, {"description": "chop"}]}))
    ann.add(_video("k", {"task": "temporal_grounding", "question": "When is the chopping?",
                         "answer": {"start": 3, "end": 9.5}}))
    ann.add(_video("k", {"task": "temporal_grounding", "question": "broken", "answer": {"start": "x"}}))
    ann.add(_video("k", {"task": "event_counting", "question": "How many cuts?", "answer": 2}))
    ann.add({**_video("k", {}), "value": "not json"})
    turns = video_turns(ann, "k")
    assert turns == [
        ("Summarize the video.", "A cooking show."),
        ("Order these.\n(0) plate\n(1) chop", "chop, then plate."),
        ("When is the chopping?", "From 3.0s to 9.5s."),
        ("How many cuts?", "2"),
    ]
    assert item_turn({"task": "event_order", "question": "q", "answer": [5], "events": []}) is None


def test_conversation_opens_with_image_and_time_prompt():
    conv = build_conversation([("Q1", "A1"), ("Q2", "A2")], duration=125.0, num_frames=32)
    assert [t["from"] for t in conv] == ["human", "gpt", "human", "gpt"]
    assert conv[0]["value"] == ("<image>\nThe video lasts for 125.00 seconds, and 32 frames are uniformly "
                                "sampled from it.\nQ1")
    assert conv[2]["value"] == "Q2"


@pytest.mark.parametrize("ref", ["caption", "caption/", "/v1", "a/b/c"])
def test_layer_refs_must_be_layer_slash_version(ref):
    with pytest.raises(ValueError, match="LAYER/VERSION"):
        parse_layer_refs([ref])
    assert parse_layer_refs(["caption/v1"]) == [("caption", "v1")]


def test_a_long_video_gets_its_hierarchy_within_the_budget():
    ann = Annotations()
    for i in range(1000):  # an hour of clip captions: far more than any budget
        ann.add(_clip("k", f"k_{i:04d}", 3.6 * i, 3.6 * i + 3.6, f"caption number {i} of a long video"))
    ann.add(_video("k", {"task": "summary", "scope": "video", "text": "An hour of cooking."}))
    for s in (1, 0):
        ann.add({**_video("k", {"task": "summary", "scope": "segment", "segment": s, "text": f"part {s}"}),
                 "start": 300.0 * s, "end": 300.0 * s + 300})
    ann.add(_video("k", {"task": "multi_hop", "scope": "video", "question": "After the cut, what?", "answer": "stir"}))
    turns = video_turns(ann, "k", budget_tokens=200)
    assert turns == [("Summarize the video.", "An hour of cooking."),
                     ("Describe the video part by part, with the time of each part.",
                      "[0.0s-300.0s] part 0\n[300.0s-600.0s] part 1"),
                     ("After the cut, what?", "stir")]


def test_dense_captions_are_thinned_to_the_budget_evenly():
    ann = Annotations()
    for i in range(1000):
        ann.add(_clip("k", f"k_{i:04d}", float(i), i + 1.0, f"caption {i}"))
    for spans in ann.clips_of.values():
        spans.sort()
    (question, answer), = video_turns(ann, "k", budget_tokens=300)
    lines = answer.splitlines()
    assert sum(len(x) // 4 + 1 for x in lines) + len(question) // 4 + 1 <= 300 and 20 < len(lines) < 1000
    starts = [float(x[1:].split("s-")[0]) for x in lines]
    assert starts == sorted(starts) and starts[0] < 100 and starts[-1] > 900  # spread over the whole video
