import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient, type TestClient } from '../helpers/clients.js';
import { READ_KEY, token } from '../helpers/env.js';
import { get } from '../helpers/http.js';
import { scrape } from '../helpers/metrics.js';
import { type RelayNode, startProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep, waitFor } from '../helpers/wait.js';

const ROOM = 'room:e2e';
const ENV = {
  PUSHRELAY_NAMESPACES: '{"room":{"presence":true,"public":true}}',
  // The default, so the time a dead node's sockets take to leave is the one operators get.
  PUSHRELAY_PRESENCE_TTL_SECONDS: '6',
};

async function member(
  node: RelayNode,
  user: string,
  userInfo?: Record<string, unknown>,
): Promise<TestClient> {
  const c = await connectClient(node.url, await token(user, userInfo ? { userInfo } : {}));
  const answer = await c.request<{ ok: boolean }>('subscribe', { channels: [ROOM] });
  expect(answer.ok).toBe(true);
  return c;
}

/** Presence events produced by these nodes, summed: each transition must be counted by exactly one of them. */
async function produced(nodes: RelayNode[], type: string): Promise<number> {
  let total = 0;
  for (const n of nodes) total += (await scrape(n.url)).value('pushrelay_presence_events_total', { type });
  return total;
}

const of = (c: TestClient, event: string, user: string) =>
  c.events(event).filter((e) => (e.data as { user: string }).user === user);

// Three real relay processes on one real Redis: presence is per user across
// the cluster, and a node that dies takes its users with it within seconds.
describe('presence across three nodes', () => {
  let redis: RedisServer;
  let a: RelayNode;
  let b: RelayNode;
  let c: RelayNode;
  let started: RelayNode[] = [];
  beforeAll(async () => {
    redis = await startRedis();
    const env = { REDIS_URL: redis.url, ...ENV };
    // Nodes that did start are stopped even when another one did not.
    const tries = await Promise.allSettled([startProcess(env), startProcess(env), startProcess(env)]);
    started = tries.flatMap((t) => (t.status === 'fulfilled' ? [t.value] : []));
    for (const t of tries) if (t.status === 'rejected') throw t.reason;
    [a, b, c] = started as [RelayNode, RelayNode, RelayNode];
  });
  afterAll(async () => {
    await Promise.all(started.map((n) => n.stop()));
    await redis?.stop();
  });

  it('tells every other member once when a user with tabs on two nodes joins, and once when the last tab leaves', async () => {
    const watchers = [await member(a, 'wa'), await member(b, 'wb'), await member(c, 'wc')];
    const addedBefore = await produced([a, b, c], 'member.added');
    const onlineBefore = await produced([a, b, c], 'user.online');
    const info = { name: 'Alice', avatar: 'https://example.com/a.png' };
    const tab1 = await member(a, 'alice', info);
    const tab2 = await member(b, 'alice', info);
    for (const w of watchers) await waitFor(() => of(w, 'pushrelay:join', 'alice').length > 0);
    await waitFor(async () => {
      const p = await get<{ users: { id: string; sockets: number }[] }>(
        `${c.url}/v1/channels/${ROOM}/presence`,
        {
          secret: READ_KEY.secret,
        },
      );
      return p.body.users.find((u) => u.id === 'alice')?.sockets === 2;
    });
    await sleep(300);
    for (const w of watchers) {
      expect(of(w, 'pushrelay:join', 'alice').map((e) => e.data)).toEqual([
        { channel: ROOM, user: 'alice', user_info: info },
      ]);
    }
    expect(await produced([a, b, c], 'member.added')).toBe(addedBefore + 1);
    expect(await produced([a, b, c], 'user.online')).toBe(onlineBefore + 1);
    const listed = await get<{ users: unknown[] }>(`${b.url}/v1/channels/${ROOM}/presence`, {
      secret: READ_KEY.secret,
    });
    expect(listed.body.users).toContainEqual({ id: 'alice', sockets: 2, user_info: info });

    tab1.close();
    await waitFor(async () => {
      const p = await get<{ online: boolean; sockets: number }>(`${c.url}/v1/users/alice/presence`, {
        secret: READ_KEY.secret,
      });
      return p.body.sockets === 1;
    });
    await sleep(500);
    for (const w of watchers) expect(of(w, 'pushrelay:leave', 'alice')).toEqual([]);

    tab2.close();
    for (const w of watchers) await waitFor(() => of(w, 'pushrelay:leave', 'alice').length > 0);
    await sleep(300);
    for (const w of watchers) {
      expect(of(w, 'pushrelay:leave', 'alice').map((e) => e.data)).toEqual([
        { channel: ROOM, user: 'alice', user_info: info },
      ]);
    }
    for (const w of watchers) w.close();
  });

  it('tells the others once, within seconds, when the node holding a user’s only socket is SIGKILLed, and leaves nothing of it in Redis', async () => {
    const wa = await member(a, 'watcher-a');
    const wb = await member(b, 'watcher-b');
    const bob = await member(c, 'bob', { name: 'Bob' });
    await waitFor(
      () => of(wa, 'pushrelay:join', 'bob').length > 0 && of(wb, 'pushrelay:join', 'bob').length > 0,
    );
    expect(bob.connected.node).toBe(c.id);
    const before = {
      removed: await produced([a, b], 'member.removed'),
      offline: await produced([a, b], 'user.offline'),
    };

    await c.kill('SIGKILL');
    const killedAt = Date.now();
    await waitFor(
      () => of(wa, 'pushrelay:leave', 'bob').length > 0 && of(wb, 'pushrelay:leave', 'bob').length > 0,
      {
        timeoutMs: 30_000,
        intervalMs: 50,
        what: 'bob leaving after his node died',
      },
    );
    const took = Date.now() - killedAt;
    console.log(`SIGKILL to pushrelay:leave on both survivors: ${took} ms (presence TTL 6 s)`);
    expect(took).toBeLessThan(20_000);

    // Two more heartbeats of both survivors: nobody produces them again.
    await sleep(4500);
    for (const w of [wa, wb]) {
      expect(of(w, 'pushrelay:leave', 'bob').map((e) => e.data)).toEqual([
        { channel: ROOM, user: 'bob', user_info: { name: 'Bob' } },
      ]);
    }
    // Once for the whole cluster, though both survivors look for dead nodes.
    expect(await produced([a, b], 'member.removed')).toBe(before.removed + 1);
    expect(await produced([a, b], 'user.offline')).toBe(before.offline + 1);

    const r = redis.client();
    const dead = c.id;
    // The cleaner's last step: the dead node leaves the heartbeat set.
    await waitFor(async () => (await r.zscore('pushrelay:nodes', dead)) === null);
    expect(await r.exists(`pushrelay:node:${dead}`, `pushrelay:node:${dead}:channels`)).toBe(0);
    expect(await r.exists('pushrelay:{user:bob}:p', 'pushrelay:{user:bob}:n', 'pushrelay:{user:bob}:u')).toBe(
      0,
    );
    const members = await r.hkeys(`pushrelay:{${ROOM}}:p`);
    expect(members.filter((f) => f.startsWith(`${dead}/`))).toEqual([]);
    expect(await r.hexists(`pushrelay:{${ROOM}}:n`, dead)).toBe(0);
    expect(await r.hkeys(`pushrelay:{${ROOM}}:u`)).toEqual(
      expect.arrayContaining(['watcher-a', 'watcher-b']),
    );
    expect(await r.hexists(`pushrelay:{${ROOM}}:u`, 'bob')).toBe(0);
    const online = await get<{ online: boolean }>(`${a.url}/v1/users/bob/presence`, {
      secret: READ_KEY.secret,
    });
    expect(online.body.online).toBe(false);
    wa.close();
    wb.close();
  });
});
