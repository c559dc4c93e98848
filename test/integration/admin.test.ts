import { describe, expect, it } from 'vitest';
import { connectClient } from '../helpers/clients.js';
import { KEY, READ_KEY, token } from '../helpers/env.js';
import { post } from '../helpers/http.js';
import { nodePair } from '../helpers/nodes.js';
import { sleep, waitFor } from '../helpers/wait.js';

const PUBLISH_ONLY = { name: 'pub', secret: 'publish-only-secret-0123456789abcdef' };

for (const mode of ['standalone', 'cluster'] as const) {
  describe(`admin routes (${mode})`, () => {
    const nodes = nodePair(mode, {
      PUSHRELAY_KEYS: `${KEY.name}:${KEY.secret},${READ_KEY.name}:${READ_KEY.secret}:read,${PUBLISH_ONLY.name}:${PUBLISH_ONLY.secret}:publish`,
    });

    it('disconnects every socket of a user, on every node, telling them not to come back', async () => {
      const tab1 = await connectClient(nodes.a.url, await token('banned'));
      const tab2 = await connectClient(nodes.b.url, await token('banned'));
      const other = await connectClient(nodes.b.url, await token('innocent'));
      const res = await post(`${nodes.a.url}/v1/users/banned/disconnect`, undefined);
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ user: 'banned', sockets: 2 });
      for (const tab of [tab1, tab2]) {
        const [notice] = await tab.waitForEvent('pushrelay:disconnect');
        expect(notice!.data).toMatchObject({ code: 4002, reason: 'kicked', reconnect: false });
        await waitFor(() => tab.socket.disconnected);
      }
      await sleep(100);
      expect(other.socket.connected).toBe(true);
      other.close();
    });

    it('subscribes and unsubscribes all of a user’s sockets server-side, whatever their tokens allow', async () => {
      const tab1 = await connectClient(nodes.a.url, await token('carol'));
      const tab2 = await connectClient(nodes.b.url, await token('carol'));
      const sub = await post(`${nodes.b.url}/v1/users/carol/subscribe`, { channels: ['vip:lounge'] });
      expect(sub.body).toEqual({ user: 'carol', sockets: 2 });
      await post(`${nodes.a.url}/v1/publish`, { event: 'vip', channels: ['vip:lounge'] });
      await tab1.waitForEvent('vip');
      await tab2.waitForEvent('vip');
      const unsub = await post(`${nodes.a.url}/v1/users/carol/unsubscribe`, { channels: ['vip:lounge'] });
      expect(unsub.body).toEqual({ user: 'carol', sockets: 2 });
      await post(`${nodes.a.url}/v1/publish`, { event: 'vip', channels: ['vip:lounge'] });
      await sleep(200);
      expect(tab1.events('vip')).toHaveLength(1);
      expect(tab2.events('vip')).toHaveLength(1);
      tab1.close();
      tab2.close();
    });

    it('keeps channels an admin subscribed a socket to when the socket refreshes its token', async () => {
      const tab = await connectClient(nodes.a.url, await token('dave', { channels: ['order:*'] }));
      await tab.request('subscribe', { channels: ['order:1'] });
      expect(
        (await post(`${nodes.b.url}/v1/users/dave/subscribe`, { channels: ['vip:lounge'] })).body,
      ).toEqual({ user: 'dave', sockets: 1 });
      const refreshed = await tab.request<{ ok: boolean }>('refresh', {
        token: await token('dave', { channels: ['order:2'] }),
      });
      expect(refreshed.ok).toBe(true);
      await post(`${nodes.b.url}/v1/publish`, { event: 'vip', channels: ['vip:lounge'] });
      await post(`${nodes.b.url}/v1/publish`, { event: 'order', channels: ['order:1'] });
      const [vip] = await tab.waitForEvent('vip');
      expect(vip!.meta!.channel).toBe('vip:lounge');
      await sleep(200);
      // What the token chose and no longer allows is still left.
      expect(tab.events('order')).toHaveLength(0);
      tab.close();
    });

    it('answers 0 sockets for a user who is not connected', async () => {
      expect((await post(`${nodes.a.url}/v1/users/nobody/disconnect`, undefined)).body).toEqual({
        user: 'nobody',
        sockets: 0,
      });
    });

    it('needs the admin scope, and valid names', async () => {
      const asPublisher = await post(`${nodes.a.url}/v1/users/x/disconnect`, undefined, {
        secret: PUBLISH_ONLY.secret,
      });
      expect(asPublisher.status).toBe(403);
      expect((asPublisher.body as { error: { code: string } }).error.code).toBe('forbidden');
      const asReader = await post(
        `${nodes.a.url}/v1/users/x/subscribe`,
        { channels: ['a'] },
        { secret: READ_KEY.secret },
      );
      expect(asReader.status).toBe(403);
      const badUser = await post(`${nodes.a.url}/v1/users/has%20space/disconnect`, undefined);
      expect((badUser.body as { error: { code: string } }).error.code).toBe('invalid_user');
      const userChannel = await post(`${nodes.a.url}/v1/users/x/subscribe`, { channels: ['user:y'] });
      expect((userChannel.body as { error: { code: string } }).error.code).toBe('invalid_channel');
      const noChannels = await post(`${nodes.a.url}/v1/users/x/subscribe`, { channels: [] });
      expect((noChannels.body as { error: { code: string } }).error.code).toBe('invalid_body');
    });
  });
}
