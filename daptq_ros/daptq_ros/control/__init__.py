"""Safety filter, action-chunk scheduling, watchdogs and command building: numpy only, no ROS."""
