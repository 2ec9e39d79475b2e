/**
 * Regenerates the sample files of the documents app (committed, so that
 * `npm start` users have them at once): `npx tsx examples/documents/make-samples.ts`.
 * Everything is generated (seeded): nothing is fetched.
 */
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeJiraCsv } from './workloads/csv/generate.ts';
import { writePdf } from './test/make-pdf.ts';

const dir = join(dirname(fileURLToPath(import.meta.url)), 'samples');

const csv = await writeJiraCsv(join(dir, 'jira-export.csv'), { rows: 2_000, badRows: 5, seed: 7, jiraHeaders: true });
console.log(`jira-export.csv: ${csv.rows} rows, bad on lines ${csv.bad.map((b) => b.line).join(', ')}`);

await writePdf(join(dir, 'security-policy.pdf'), {
  title: 'Acme Information Security Policy',
  author: 'Acme Security Team',
  pages: [
    'Acme Information Security Policy. Version 3.2, approved by the board.\n\nThis policy describes how Acme protects customer data and the systems that process it. It applies to every employee and contractor.',
    'Access control.\n\nAll administrator accounts require multi-factor authentication. Access rights are reviewed every quarter by the system owner. Passwords are at least fourteen characters long and are never shared.',
    'Data protection.\n\nCustomer data is encrypted at rest with AES-256 and in transit with TLS 1.3. Encryption keys are kept in a hardware security module and rotated yearly.',
    'Vendor management.\n\nVendors that process customer data sign a data processing agreement. The policy does not include penetration testing; no external firm has tested the platform.',
  ],
});
await writePdf(join(dir, 'continuity-plan.pdf'), {
  title: 'Acme Business Continuity Plan',
  author: 'Acme Operations',
  pages: [
    'Business continuity plan.\n\nBackups of every production database are taken nightly and kept for thirty days. A restore is rehearsed in a quarterly drill and its duration recorded.',
    'Incident response.\n\nThe on-call engineer is paged within five minutes of an alert. Incidents are reviewed in a blameless post-mortem within one week.',
  ],
});
const chapters = ['architecture', 'deployment', 'monitoring', 'billing', 'support', 'security', 'backups', 'onboarding', 'pricing', 'roadmap'];
await writePdf(join(dir, 'handbook-20-pages.pdf'), {
  title: 'Acme Engineering Handbook',
  pages: Array.from({ length: 20 }, (_, i) => {
    const topic = chapters[i % chapters.length]!;
    return `Chapter ${i + 1}: ${topic}.\n\nThis page of the handbook covers ${topic}. ${i === 13 ? 'The kraken deployment freeze starts on the first Monday of December. ' : ''}Teams document decisions about ${topic} in the wiki and review them twice a year.`;
  }),
});
writeFileSync(
  join(dir, 'assessment-criteria.json'),
  `${JSON.stringify(
    [
      { id: 'mfa', name: 'Multi-factor authentication', description: 'Administrator accounts require multi-factor authentication' },
      { id: 'encryption', name: 'Encryption at rest', description: 'Customer data is encrypted at rest' },
      { id: 'backups', name: 'Tested backups', description: 'Backups are taken and restores are rehearsed in a drill' },
      { id: 'pentest', name: 'Penetration testing', description: 'An external firm performs penetration testing of the platform' },
    ],
    null,
    2,
  )}\n`,
);
writeFileSync(
  join(dir, 'ticket.json'),
  `${JSON.stringify({ ticket_id: 'SUP-1042', tenant_id: 'acme', priority: 'low', description: 'Checkout is down for all users since 10:00 UTC: HTTP 503 on https://shop.acme.example/cart. Customers cannot pay. Please help ASAP.' }, null, 2)}\n`,
);
console.log(`samples written to ${dir}`);
