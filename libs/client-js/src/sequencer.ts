/**
 * Exactly-once, in-order delivery of each room's sequenced events (pure logic, no I/O): the
 * TypeScript twin of `roomstream_client.sequencer`.
 *
 * The gateway may deliver a room's event twice (live, and again in the replay after a reconnect)
 * or ahead of time (a live event while the replay of older ones is on its way). A `Sequencer`
 * remembers the last delivered seq per room and turns what it is offered into `last+1, last+2, …`:
 * seq ≤ last is a duplicate (dropped); seq = last+1 is delivered with any held events that are now
 * contiguous; seq > last+1 is held until the gap is filled (by `join(room, since=last)`). A room
 * that is not tracked yet (its `join` on the way) holds everything until `track` says where it
 * starts.
 */

interface Room<T> {
  last: number | null;
  held: Map<number, T>;
  /** When (caller's clock) the oldest open gap appeared; null without held events. */
  gapSince: number | null;
}

export class Sequencer<T> {
  private readonly rooms = new Map<string, Room<T>>();
  /** Items dropped because their seq had been delivered already. */
  duplicates = 0;

  constructor(readonly maxHeldPerRoom = 100_000) {}

  /** The last delivered seq of `room`, or null when it is not tracked. */
  last(room: string): number | null {
    return this.rooms.get(room)?.last ?? null;
  }

  isTracked(room: string): boolean {
    return this.last(room) !== null;
  }

  /** Last delivered seq of every tracked room (what a reconnect resumes from). */
  positions(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [room, r] of this.rooms) if (r.last !== null) out.set(room, r.last);
    return out;
  }

  /** How many events of `room` wait for a gap to be filled. */
  held(room: string): number {
    return this.rooms.get(room)?.held.size ?? 0;
  }

  /** Tracked rooms whose gap has stayed open for more than `after` (caller's clock). */
  stalled(now: number, after: number): string[] {
    const out: string[] = [];
    for (const [room, r] of this.rooms) {
      if (r.last !== null && r.gapSince !== null && now - r.gapSince > after) out.push(room);
    }
    return out;
  }

  /** Start tracking `room` at `last` unless it is tracked already; returns what is now due. */
  track(room: string, last: number): T[] {
    const r = this.room(room);
    if (r.last === null) r.last = last;
    return this.drain(r);
  }

  /** Tracking of `room` restarts at `last` (an explicit `join(room, { since: last })`). */
  reset(room: string, last: number): T[] {
    const r = this.room(room);
    r.last = last;
    return this.drain(r);
  }

  /** Events before `firstAvailable` exist nowhere any more: stop waiting for them. */
  skipTo(room: string, firstAvailable: number): T[] {
    const r = this.room(room);
    r.last = Math.max(r.last ?? 0, firstAvailable - 1);
    return this.drain(r);
  }

  /** Stop tracking `room` (after `leave`). */
  forget(room: string): void {
    this.rooms.delete(room);
  }

  /** Offer one sequenced item; returns the items to deliver now, in seq order. */
  offer(room: string, seq: number, item: T, now = 0): T[] {
    const r = this.room(room);
    const last = r.last;
    if (last !== null && seq <= last) {
      this.duplicates++;
      return [];
    }
    if (last !== null && seq === last + 1) {
      r.last = seq;
      if (r.held.size === 0) return [item];
      return [item, ...this.drain(r)];
    }
    if (r.held.has(seq)) {
      this.duplicates++;
      return [];
    }
    if (r.held.size >= this.maxHeldPerRoom) {
      // Bounded memory: keep the events nearest the gap; the replay brings the rest again.
      const newest = Math.max(...r.held.keys());
      if (seq > newest) return [];
      r.held.delete(newest);
    }
    r.held.set(seq, item);
    if (r.gapSince === null) r.gapSince = now;
    return [];
  }

  private room(room: string): Room<T> {
    let r = this.rooms.get(room);
    if (r === undefined) {
      r = { last: null, held: new Map(), gapSince: null };
      this.rooms.set(room, r);
    }
    return r;
  }

  private drain(r: Room<T>): T[] {
    const out: T[] = [];
    if (r.last === null) return out;
    for (const seq of r.held.keys()) {
      if (seq <= r.last) {
        r.held.delete(seq);
        this.duplicates++;
      }
    }
    for (;;) {
      const item = r.held.get(r.last + 1);
      if (item === undefined) break;
      r.held.delete(r.last + 1);
      r.last++;
      out.push(item);
    }
    if (r.held.size === 0) r.gapSince = null;
    return out;
  }
}
