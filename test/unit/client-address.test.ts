import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { clientAddress } from '../../src/realtime/admission.js';

/** The two things clientAddress reads from a request: the peer and X-Forwarded-For. */
const request = (peer: string, forwarded?: string) =>
  ({
    socket: { remoteAddress: peer },
    headers: forwarded === undefined ? {} : { 'x-forwarded-for': forwarded },
  }) as unknown as IncomingMessage;

describe('the client address a handshake is counted under', () => {
  it('is the peer when no proxy is trusted, whatever X-Forwarded-For claims', () => {
    expect(clientAddress(false)(request('10.0.0.9', '1.2.3.4'))).toBe('10.0.0.9');
  });

  it('is the first forwarded address when every proxy is trusted', () => {
    expect(clientAddress(true)(request('10.0.0.9', '1.2.3.4, 10.0.0.5'))).toBe('1.2.3.4');
    expect(clientAddress(true)(request('10.0.0.9'))).toBe('10.0.0.9');
  });

  it('counts hops back from the peer', () => {
    expect(clientAddress(1)(request('10.0.0.9', '1.2.3.4, 5.6.7.8'))).toBe('5.6.7.8');
    expect(clientAddress(2)(request('10.0.0.9', '1.2.3.4, 5.6.7.8'))).toBe('1.2.3.4');
    expect(clientAddress(5)(request('10.0.0.9', '1.2.3.4'))).toBe('1.2.3.4');
  });

  it('skips the proxies listed by address or CIDR, and only those', () => {
    const address = clientAddress(['10.0.0.0/8', '192.168.1.1']);
    expect(address(request('::ffff:10.0.0.9', '1.2.3.4, 192.168.1.1'))).toBe('1.2.3.4');
    // A client cannot pose as someone else through a proxy that is not trusted.
    expect(address(request('172.16.0.1', '1.2.3.4'))).toBe('172.16.0.1');
  });
});
