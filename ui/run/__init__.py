"""Running a job: raw control values into settings (``settings``), checked at the queue's door, where a
job's runs are posed dry (``door``), the generators that pose and drive a run or a race in the
library (``session``) and the small events they yield (``events``), and the Run and Race handlers
that turn those events into the page's updates (``handlers``)."""
