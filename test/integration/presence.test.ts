import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { connectClient, connectError, type TestClient } from '../helpers/clients.js';
import { JWT_SECRET, READ_KEY, token } from '../helpers/env.js';
import { get } from '../helpers/http.js';
import { scrape } from '../helpers/metrics.js';
import { type Mode, nodePair, startInProcess } from '../helpers/nodes.js';
import { sleep, waitFor } from '../helpers/wait.js';

const ENV = {
  PUSHRELAY_NAMESPACES: '{"room":{"presence":true,"public":true},"news":{"public":true}}',
  PUSHRELAY_MAX_USER_INFO_BYTES: '200',
};

interface ChannelPresence {
  channel: string;
  sockets: number;
  users: { id: string; sockets: number; user_info?: unknown }[];
}

async function joined(url: string, user: string, channels: string[], userInfo?: Record<string, unknown>) {
  const c = await connectClient(url, await token(user, userInfo ? { userInfo } : {}));
  const answer = await c.request<{ ok: boolean }>('subscribe', { channels });
  expect(answer.ok).toBe(true);
  return c;
}

function presenceOf(url: string, channel: string) {
  return get<ChannelPresence>(`${url}/v1/channels/${channel}/presence`, { secret: READ_KEY.secret });
}

const notices = (c: TestClient, event: 'pushrelay:join' | 'pushrelay:leave') =>
  c.events(event).map((e) => e.data);

for (const mode of ['standalone', 'cluster'] as Mode[]) {
  describe(`presence notices and user_info (${mode})`, () => {
    const nodes = nodePair(mode, ENV);

    it('tells a channel once per user when their first tab joins and their last tab leaves, with user_info', async () => {
      const { a, b } = nodes;
      const watcher = await joined(a.url, 'walt', ['room:1']);
      const tab1 = await joined(a.url, 'alice', ['room:1'], { name: 'Alice', avatar: '/a.png' });
      const [join] = await watcher.waitForEvent('pushrelay:join');
      expect(join!.data).toEqual({
        channel: 'room:1',
        user: 'alice',
        user_info: { name: 'Alice', avatar: '/a.png' },
      });
      // A second tab on the other node: the user is already there.
      const tab2 = await joined(b.url, 'alice', ['room:1'], { name: 'Alice', avatar: '/a.png' });
      const listed = await presenceOf(b.url, 'room:1');
      expect(listed.status).toBe(200);
      expect(listed.body).toEqual({
        channel: 'room:1',
        sockets: 3,
        users: [
          { id: 'alice', sockets: 2, user_info: { name: 'Alice', avatar: '/a.png' } },
          { id: 'walt', sockets: 1 },
        ],
      });
      // The joining socket itself is not told about its own arrival.
      expect(notices(tab1, 'pushrelay:join')).toEqual([]);
      tab1.close();
      await waitFor(async () => (await presenceOf(a.url, 'room:1')).body.sockets === 2);
      await sleep(300);
      expect(notices(watcher, 'pushrelay:join')).toHaveLength(1);
      expect(notices(watcher, 'pushrelay:leave')).toEqual([]);
      tab2.close();
      const [leave] = await watcher.waitForEvent('pushrelay:leave');
      expect(leave!.data).toEqual({
        channel: 'room:1',
        user: 'alice',
        user_info: { name: 'Alice', avatar: '/a.png' },
      });
      await sleep(300);
      expect(notices(watcher, 'pushrelay:leave')).toHaveLength(1);
      // A member without user_info is sent without it.
      const bob = await joined(b.url, 'bob', ['room:1']);
      const joins = await watcher.waitForEvent('pushrelay:join', 2);
      expect(joins[1]!.data).toEqual({ channel: 'room:1', user: 'bob' });
      bob.close();
      watcher.close();
    });

    it('sends no notices in channels outside presence namespaces, but lists their members', async () => {
      const { a, b } = nodes;
      const watcher = await joined(a.url, 'wes', ['news:1']);
      const reader = await joined(b.url, 'rita', ['news:1'], { team: 'red' });
      const listed = await presenceOf(a.url, 'news:1');
      expect(listed.body.users).toEqual([
        { id: 'rita', sockets: 1, user_info: { team: 'red' } },
        { id: 'wes', sockets: 1 },
      ]);
      await sleep(200);
      expect(watcher.received.filter((e) => e.event.startsWith('pushrelay:join'))).toEqual([]);
      reader.close();
      watcher.close();
    });

    it('counts the transitions it produced in pushrelay_presence_events_total', async () => {
      const { a, b } = nodes;
      const total = async (type: string) =>
        (await scrape(a.url)).value('pushrelay_presence_events_total', { type }) +
        (a === b ? 0 : (await scrape(b.url)).value('pushrelay_presence_events_total', { type }));
      const before = { online: await total('user.online'), added: await total('member.added') };
      const t1 = await joined(a.url, 'metric-user', ['room:m']);
      const t2 = await joined(b.url, 'metric-user', ['room:m']);
      await waitFor(async () => (await total('member.added')) === before.added + 1);
      expect(await total('user.online')).toBe(before.online + 1);
      t1.close();
      t2.close();
      await waitFor(async () => (await total('member.removed')) >= 1);
    });
  });
}

describe('the user_info claim', () => {
  const sign = (claims: Record<string, unknown>) =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('alice')
      .setExpirationTime('10m')
      .sign(new TextEncoder().encode(JWT_SECRET));

  it('is refused at connect unless it is a JSON object within the size and depth limits', async () => {
    const node = await startInProcess(ENV);
    try {
      for (const bad of ['Alice', 42, ['a'], null]) {
        const err = await connectError(node.url, { token: await sign({ user_info: bad }) });
        expect(err.data?.code).toBe('token_invalid');
        expect(err.message).toBe('the token "user_info" claim must be a JSON object');
      }
      const big = await connectError(node.url, {
        token: await sign({ user_info: { bio: 'x'.repeat(200) } }),
      });
      expect(big.data?.code).toBe('token_invalid');
      expect(big.message).toBe(
        'the token "user_info" claim is 210 bytes of JSON; the limit is 200 (PUSHRELAY_MAX_USER_INFO_BYTES)',
      );
      let deep: unknown = 1;
      for (let i = 0; i < 40; i++) deep = { d: deep };
      const tooDeep = await connectError(node.url, { token: await sign({ user_info: deep }) });
      expect(tooDeep.data?.code).toBe('token_invalid');
      expect(tooDeep.message).toMatch(
        /^the token "user_info" claim is refused: .*nested deeper than 32 levels/,
      );
      const proto = await connectError(node.url, {
        token: await sign(JSON.parse('{"user_info":{"__proto__":{"admin":true}}}')),
      });
      expect(proto.data?.code).toBe('token_invalid');
      // Within the limit it connects.
      const ok = await connectClient(node.url, await sign({ user_info: { bio: 'x'.repeat(150) } }));
      ok.close();
      const refused = (await scrape(node.url)).value('pushrelay_socket_connects_total', {
        outcome: 'token_invalid',
      });
      expect(refused).toBe(7);
    } finally {
      await node.stop();
    }
  });
});
