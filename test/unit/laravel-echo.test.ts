import { describe, expect, it } from 'vitest';
import { decodeLaravel, laravelRoute } from '../../src/ingest/sources/laravel.js';
import { clientHeaders, memberFrom, userIdOut } from '../../src/realtime/protocols/echo/auth.js';
import { isGuarded } from '../../src/realtime/protocols/echo/index.js';

// The pure parts of the Laravel front end; the wire behaviour is tested against
// Laravel and laravel-echo themselves in test/integration and test/e2e.

describe('Laravel Echo compatibility, pure parts', () => {
  it('guards private- and presence- channels, anchored (laravel-echo-server matched anywhere in the name)', () => {
    expect(isGuarded('private-orders.1')).toBe(true);
    expect(isGuarded('presence-chat.1')).toBe(true);
    expect(isGuarded('orders.private-1')).toBe(false);
    expect(isGuarded('my-presence-chat')).toBe(false);
  });

  it('takes channel_data as an object or as the JSON text of one (Laravel versions differ)', () => {
    const data = { user_id: 7, user_info: { name: 'Ann' } };
    expect(memberFrom({ channel_data: data })).toEqual({ user: '7', info: '{"name":"Ann"}' });
    expect(memberFrom({ channel_data: JSON.stringify(data) })).toEqual({ user: '7', info: '{"name":"Ann"}' });
    expect(memberFrom({ channel_data: { user_id: 'u-1' } })).toEqual({ user: 'u-1', info: undefined });
    for (const bad of [
      true,
      {},
      { channel_data: '{' },
      { channel_data: { user_id: {} } },
      { channel_data: [] },
    ]) {
      expect(memberFrom(bad)).toBeUndefined();
    }
    expect([userIdOut('7'), userIdOut('007'), userIdOut('u-1')]).toEqual([7, '007', 'u-1']);
  });

  it('forwards only well-formed client headers to the auth endpoint, never ones that describe the request', () => {
    expect(
      clientHeaders({
        headers: {
          'X-CSRF-TOKEN': 'abc',
          Authorization: 'Bearer t',
          Host: 'evil.example',
          'Content-Length': '1',
          'X-Injected': 'a\r\nSet-Cookie: x=1',
          'bad name': 'x',
          'X-Number': 42,
        },
      }),
    ).toEqual({ 'X-CSRF-TOKEN': 'abc', Authorization: 'Bearer t' });
    expect(clientHeaders(undefined)).toEqual({});
    expect(clientHeaders({ headers: ['x'] })).toEqual({});
  });

  it('takes <prefix><channel> and nothing of the relay’s own or the other sources’, even with an empty prefix', () => {
    const route = laravelRoute({
      prefix: '',
      others: ['pushrelay:', 'shop:', '__anycable__'],
      maxJsonDepth: 8,
    });
    expect(route.pattern).toBe('*');
    expect(route.accepts!('private-orders.1')).toBe(true);
    for (const c of ['pushrelay:publish', 'shop:chat', '__anycable__', '__keyspace@0__:x', '']) {
      expect(route.accepts!(c), c).toBe(false);
    }
    const prefixed = laravelRoute({ prefix: 'a*b_', others: [], maxJsonDepth: 8 });
    expect(prefixed.pattern).toBe('a\\*b_*');
    expect(prefixed.accepts!('a*b_orders')).toBe(true);
    expect(prefixed.accepts!('a*b_')).toBe(false);
  });

  it('decodes a broadcast into a publish of the same event and data, except the socket that sent it', () => {
    const text = '{"event":"App\\\\Events\\\\OrderShipped","data":{"id":1,"socket":"s1"},"socket":"s1"}';
    expect(decodeLaravel('orders', text, 8)).toEqual({
      kind: 'publish',
      body: { event: 'App\\Events\\OrderShipped', channels: ['orders'], data: { id: 1, socket: 's1' } },
      options: { exceptSockets: ['s1'] },
    });
    expect(decodeLaravel('orders', '{"event":"E","data":[],"socket":null}', 8)).toEqual({
      kind: 'publish',
      body: { event: 'E', channels: ['orders'], data: [] },
    });
    expect(decodeLaravel('orders', '{"event":"E","data":1,"socket":[]}', 8)).toMatchObject({
      kind: 'refuse',
      reason: 'invalid_body',
    });
  });
});
