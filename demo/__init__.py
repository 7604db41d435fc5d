"""The end-to-end lab demo (`make demo`) and the process orchestration the end-to-end tests share."""
