"""A test-only action type whose steps succeed, fail, raise, sleep or report progress on demand."""
