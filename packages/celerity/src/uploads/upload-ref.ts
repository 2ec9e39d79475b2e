import { z } from 'zod';

/**
 * The handle a task receives for an uploaded file (`POST /v1/uploads` puts it
 * in the input's `file` field). The file lives in Celerity's upload directory
 * until the job's final attempt ends; a task reads it from `path` and must
 * not delete it (the worker does).
 */
export const uploadRefSchema = z
  .object({
    upload_id: z.string().min(1),
    /** Absolute path of the stored file, on storage the API and the workers share. */
    path: z.string().min(1),
    /** The client's file name, sanitised (no directories). */
    filename: z.string().min(1),
    /** The content type, as checked by magic bytes. */
    content_type: z.string().min(1),
    size: z.number().int().min(0),
  })
  .strict();

export type UploadRef = z.infer<typeof uploadRefSchema>;
