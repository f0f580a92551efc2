DROP VIEW task_view;
DROP TABLE tasks;
