import { readFile } from 'node:fs/promises';
import { getDocument, PDFDateString } from 'pdfjs-dist/legacy/build/pdf.mjs';
import { NonRetryableError } from 'celerity';

/** The text of one page; `page` is 1-based. */
export interface PdfPage {
  page: number;
  text: string;
}

/** The document information dictionary, as far as the file has it (null when absent). */
export interface PdfMetadata {
  title: string | null;
  author: string | null;
  subject: string | null;
  creator: string | null;
  producer: string | null;
  /** ISO 8601, from the PDF's CreationDate. */
  created_at: string | null;
}

export interface PdfText {
  pages: PdfPage[];
  page_count: number;
  metadata: PdfMetadata;
}

export interface ExtractOptions {
  /** Checked between pages; extraction stops with the signal's reason. */
  signal?: AbortSignal;
  /** Called after each page, e.g. to report progress. Awaited. */
  onPage?: (pagesDone: number, pagesTotal: number) => void | Promise<void>;
  /** How errors name the file (e.g. the upload's file name); default its path, or "The file". */
  name?: string;
}

/** The file is not a PDF that pdfjs can read. Retrying cannot help. */
export class InvalidPdfError extends NonRetryableError {
  override readonly code: string = 'invalid_pdf';
}

/** The PDF is encrypted with a user password; without it no text can be read. */
export class EncryptedPdfError extends InvalidPdfError {
  override readonly code: string = 'pdf_encrypted';
}

/** The subset of pdfjs' TextItem the joiner needs. */
interface TextPiece {
  str: string;
  width: number;
  height: number;
  transform: number[];
  hasEOL: boolean;
}

/**
 * Extracts the text of every page of a PDF, with its page count and metadata.
 *
 * @param source - a file path, or the file's bytes (copied: pdfjs may detach the buffer it gets).
 * @throws {InvalidPdfError} when the bytes are not a readable PDF (non-retryable, code `invalid_pdf`).
 * @throws {EncryptedPdfError} when the PDF needs a password (code `pdf_encrypted`).
 */
export async function extractPdfPages(source: string | Uint8Array, opts: ExtractOptions = {}): Promise<PdfText> {
  const bytes = typeof source === 'string' ? await readFile(source) : source;
  const label = opts.name !== undefined ? `"${opts.name}"` : typeof source === 'string' ? `"${source}"` : 'The file';
  const loading = getDocument({ data: new Uint8Array(bytes), verbosity: 0, isEvalSupported: false, stopAtErrors: false });
  let pdf;
  try {
    pdf = await loading.promise;
  } catch (err) {
    await loading.destroy().catch(() => {});
    throw parseError(err, label);
  }
  try {
    const total = pdf.numPages;
    const metadata = await readMetadata(pdf);
    const pages: PdfPage[] = [];
    for (let n = 1; n <= total; n++) {
      opts.signal?.throwIfAborted();
      let text: string;
      try {
        const page = await pdf.getPage(n);
        const content = await page.getTextContent();
        text = joinTextItems(content.items.filter((i): i is typeof i & TextPiece => 'str' in i));
        page.cleanup();
      } catch (err) {
        throw new InvalidPdfError(`${label} has a page that cannot be read (page ${n} of ${total}): ${messageOf(err)}`, { cause: err });
      }
      pages.push({ page: n, text });
      await opts.onPage?.(n, total);
    }
    return { pages, page_count: total, metadata };
  } finally {
    await pdf.destroy().catch(() => {});
  }
}

function parseError(err: unknown, label: string): Error {
  const name = err instanceof Error ? err.name : '';
  if (name === 'PasswordException') return new EncryptedPdfError(`${label} is a password-protected PDF; its text cannot be read`, { cause: err });
  return new InvalidPdfError(`${label} is not a valid PDF: ${messageOf(err)}`, { cause: err });
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function readMetadata(pdf: { getMetadata(): Promise<{ info: object }> }): Promise<PdfMetadata> {
  // A damaged info dictionary should not cost the text, which is what matters.
  const info = ((await pdf.getMetadata().catch(() => null))?.info ?? {}) as Record<string, unknown>;
  const str = (key: string): string | null => {
    const v = info[key];
    return typeof v === 'string' && v.trim() !== '' ? v.trim() : null;
  };
  const rawDate = str('CreationDate');
  const date = rawDate ? PDFDateString.toDateObject(rawDate) : null;
  return {
    title: str('Title'),
    author: str('Author'),
    subject: str('Subject'),
    creator: str('Creator'),
    producer: str('Producer'),
    created_at: date && !Number.isNaN(date.getTime()) ? date.toISOString() : null,
  };
}

/**
 * Joins pdfjs text items into plain text. `hasEOL` marks line ends; items on
 * one line often come without the space between them (each word or run is
 * positioned on its own), so a horizontal gap becomes a space, and a jump in
 * y without an EOL becomes a newline.
 */
export function joinTextItems(items: TextPiece[]): string {
  let out = '';
  let prev: TextPiece | undefined;
  for (const item of items) {
    if (prev && !prev.hasEOL && item.str !== '' && out !== '' && !/\s$/.test(out) && !/^\s/.test(item.str)) {
      const size = Math.hypot(item.transform[2] ?? 0, item.transform[3] ?? 0) || item.height || 1;
      const [x = 0, y = 0] = item.transform.slice(4);
      const [px = 0, py = 0] = prev.transform.slice(4);
      if (Math.abs(y - py) > size * 0.5) out += '\n';
      else if (x - (px + prev.width) > size * 0.1) out += ' ';
    }
    out += item.str;
    if (item.hasEOL) out += '\n';
    if (item.str !== '' || item.hasEOL) prev = item;
  }
  return out
    .split('\n')
    .map((line) => line.replace(/[ \t\u00a0]+/g, ' ').trimEnd())
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
}
