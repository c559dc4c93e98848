import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERRORS } from '../../src/errors.js';
import { README, SECTIONS, section } from '../helpers/docs.js';

// The README's tables are generated from the code (npm run docs); these fail
// when someone changes one without the other.

const readme = readFileSync(README, 'utf8');

describe('README', () => {
  for (const [name, make] of Object.entries(SECTIONS)) {
    it(`has the ${name} table the code defines (run npm run docs)`, () => {
      expect(section(readme, name)).toBe(make());
    });
  }

  it('starts with the two commands: start the relay, run the tests', () => {
    const firstBlock = /```bash\n([\s\S]*?)```/.exec(readme)![1]!;
    expect(firstBlock).toContain('npm start');
    expect(firstBlock).toContain('npm test');
    expect(readme.indexOf('```bash')).toBeLessThan(readme.indexOf('## '));
  });

  it('documents every error code with the status the registry gives it', () => {
    for (const [code, e] of Object.entries(ERRORS)) {
      expect(readme).toContain(`| ${e.status} | \`${code}\` |`);
    }
  });
});
