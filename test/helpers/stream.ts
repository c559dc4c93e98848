import { KEY } from './env.js';
import type { RecoveringSubscriber } from './subscriber.js';
import { sleep, waitFor } from './wait.js';

// A steady publish stream over HTTP that records which ids were answered 2xx,
// the way test/e2e/faults.test.ts counts: only those are promised.

export interface PublishStream {
  /** ids answered 2xx, in the order they were answered */
  readonly acked: string[];
  readonly statuses: Map<number | 'network', number>;
  readonly done: Promise<void>;
}

/**
 * Publishes `count` messages `everyMs` apart, round-robin over the nodes,
 * message i to the channels `channelsOf(i)`, with idempotency id `<prefix>-<i>`.
 */
export function publishStream(
  urls: () => string[],
  count: number,
  everyMs: number,
  prefix: string,
  channelsOf: (i: number) => string[],
  onSent?: (i: number) => void,
): PublishStream {
  const acked: string[] = [];
  const statuses = new Map<number | 'network', number>();
  const bump = (k: number | 'network') => statuses.set(k, (statuses.get(k) ?? 0) + 1);
  const inflight: Promise<void>[] = [];
  const start = Date.now();
  const done = (async () => {
    for (let i = 0; i < count; i++) {
      await sleep(Math.max(0, start + i * everyMs - Date.now()));
      onSent?.(i);
      const list = urls();
      const url = list[i % list.length]!;
      const id = `${prefix}-${i}`;
      inflight.push(
        fetch(`${url}/v1/publish`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY.secret}` },
          body: JSON.stringify({ event: 'tick', data: { i }, channels: channelsOf(i), id }),
          signal: AbortSignal.timeout(10_000),
        }).then(
          async (res) => {
            await res.arrayBuffer();
            bump(res.status);
            if (res.ok) acked.push(id);
          },
          () => {
            bump('network');
          },
        ),
      );
    }
    await Promise.all(inflight);
  })();
  return { acked, statuses, done };
}

/** Waits (up to 30 s) for every subscriber to hold every id it should; the caller's assertion reports what is missing. */
export async function allReceived(
  subs: readonly RecoveringSubscriber[],
  expected: (s: RecoveringSubscriber) => readonly string[],
): Promise<void> {
  await waitFor(() => subs.every((s) => expected(s).every((id) => s.received.has(id))), {
    timeoutMs: 30_000,
    what: 'every subscriber to hold every acknowledged id',
  }).catch(() => undefined);
}
