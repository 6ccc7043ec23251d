//! Job forms (filled in by the job-forms work).
