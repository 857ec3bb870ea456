/**
 * The collision rule of Fasten conversion — of several resources with one
 * (type, id), the one with the greatest `meta.lastUpdated` wins (string
 * comparison, missing = ""), a tie going to the later one — decided in two
 * passes over the same input, without keeping resources or even keys:
 *
 * - Pass 1 (`observe`, in input order) adds every key to a KeySet (64-bit
 *   hashes, about 9.5 bytes per resource). A key met again is a collision:
 *   for it alone, an exact entry remembers the best of the *later*
 *   occurrences (lastUpdated, position). The first occurrence is not known
 *   then (its lastUpdated was not kept), and need not be:
 * - Pass 2 (`wins`, in the same order) meets the first occurrence of a
 *   colliding key before any later one; it now knows both sides, decides
 *   which position wins, and every other occurrence is dropped.
 *
 * Memory: the KeySet, plus one small entry per colliding key (its key text,
 * one lastUpdated string, three numbers): bounded by the collisions, not
 * by the input. Positions are ordinals over every resource the reader
 * yields, so both passes must read the same bytes with the same reader.
 *
 * A hash false positive (two keys sharing a 64-bit hash; odds in keySet.ts)
 * makes pass 1 believe the second key collides; pass 2 then meets that
 * key's first occurrence at the very position pass 1 recorded first, sees
 * there was no earlier one, and keeps the rule exact anyway.
 */
import { KeySet } from '../util/keySet.js';

interface Collision {
  /** lastUpdated and position of the best later occurrence seen in pass 1. */
  bestLastUpdated: string;
  bestPosition: number;
  /** Position of the first occurrence pass 1 recorded here (not the key's first). */
  firstRecorded: number;
  /** Decided in pass 2, at the key's first occurrence; -1 before. */
  winner: number;
}

export class CollisionIndex {
  private readonly seen: KeySet;
  private readonly collisions = new Map<string, Collision>();
  /** Occurrences beyond the first, counted in pass 1. */
  duplicates = 0;

  constructor(seed?: number) {
    this.seen = new KeySet({ seed });
  }

  /** Pass 1: one resource with key `key` (`Type/id`) at `position`. */
  observe(key: string, lastUpdated: string, position: number): void {
    if (this.seen.add(key)) return;
    this.duplicates++;
    const known = this.collisions.get(key);
    if (known === undefined) {
      this.collisions.set(key, { bestLastUpdated: lastUpdated, bestPosition: position, firstRecorded: position, winner: -1 });
    } else if (!(lastUpdated < known.bestLastUpdated)) {
      // Greater, or a tie: the later one wins.
      known.bestLastUpdated = lastUpdated;
      known.bestPosition = position;
    }
  }

  /** Pass 2: whether the resource at `position` is the one its key keeps. */
  wins(key: string, lastUpdated: string, position: number): boolean {
    // Most keys never collide: one Map lookup, no KeySet probe.
    const collision = this.collisions.get(key);
    if (collision === undefined) return true;
    if (collision.winner < 0) {
      const hadEarlier = position !== collision.firstRecorded;
      collision.winner = hadEarlier && lastUpdated > collision.bestLastUpdated ? position : collision.bestPosition;
    }
    return position === collision.winner;
  }

  /** Keys that occur more than once (as pass 1 saw them). */
  get collidingKeys(): number {
    return this.collisions.size;
  }

  /** Approximate bytes held: the KeySet table plus the collision entries. */
  get bytes(): number {
    let entries = 0;
    for (const [key, c] of this.collisions) entries += 80 + 2 * (key.length + c.bestLastUpdated.length);
    return this.seen.bytes + entries;
  }
}

/**
 * `meta.lastUpdated` as the Python script reads it: the string, or "" when
 * absent (or not a string). Compared with JS `<`, which orders UTF-16 units
 * where Python orders code points: the two differ only between characters
 * above U+FFFF and U+E000–U+FFFF, which an instant never holds.
 */
export function lastUpdatedOf(resource: Record<string, unknown>): string {
  const meta = resource.meta as { lastUpdated?: unknown } | undefined;
  const value = meta?.lastUpdated;
  return typeof value === 'string' ? value : '';
}
