import assert from "node:assert/strict";
import { test } from "node:test";
import { Sequencer } from "../src/sequencer.js";

test("in order, duplicates dropped, gaps held until filled", () => {
  const s = new Sequencer<number>();
  assert.deepEqual(s.track("r", 5), []);
  assert.deepEqual(s.offer("r", 6, 6), [6]);
  assert.deepEqual(s.offer("r", 6, 6), []); // duplicate
  assert.deepEqual(s.offer("r", 8, 8, 1), []); // gap: 7 missing
  assert.deepEqual(s.offer("r", 9, 9, 2), []);
  assert.equal(s.held("r"), 2);
  assert.deepEqual(s.stalled(10, 5), ["r"]);
  assert.deepEqual(s.offer("r", 7, 7), [7, 8, 9]);
  assert.deepEqual(s.stalled(10, 5), []);
  assert.equal(s.last("r"), 9);
  assert.equal(s.duplicates, 1);
});

test("an untracked room holds until track says where it starts", () => {
  const s = new Sequencer<number>();
  assert.deepEqual(s.offer("r", 3, 3), []);
  assert.deepEqual(s.offer("r", 4, 4), []);
  assert.deepEqual(s.track("r", 2), [3, 4]);
  assert.deepEqual(s.track("r", 0), []); // tracked already: no change
  assert.equal(s.last("r"), 4);
});

test("reset restarts at since; held events at or below it are duplicates", () => {
  const s = new Sequencer<number>();
  s.track("r", 1);
  s.offer("r", 4, 4);
  assert.deepEqual(s.reset("r", 4), []);
  assert.equal(s.held("r"), 0);
  assert.deepEqual(s.offer("r", 5, 5), [5]);
});

test("skipTo stops waiting for events that exist nowhere", () => {
  const s = new Sequencer<number>();
  s.track("r", 1);
  s.offer("r", 10, 10);
  assert.deepEqual(s.skipTo("r", 10), [10]);
});

test("held events are bounded, keeping those nearest the gap", () => {
  const s = new Sequencer<number>(2);
  s.track("r", 0);
  s.offer("r", 5, 5);
  s.offer("r", 3, 3);
  s.offer("r", 9, 9); // beyond the newest held with the room full: dropped
  s.offer("r", 2, 2); // nearer: evicts 5
  assert.deepEqual(s.offer("r", 1, 1), [1, 2, 3]);
  assert.equal(s.held("r"), 0);
});

test("forget and positions", () => {
  const s = new Sequencer<number>();
  s.track("a", 1);
  s.track("b", 2);
  s.forget("a");
  assert.deepEqual([...s.positions()], [["b", 2]]);
});
