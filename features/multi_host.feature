Feature: Several GPU hosts
  caseflow can drive several GPU hosts, each with its own connection, queue and
  GPU slots. A queued case takes a free slot of its group on the host that has
  the most of them free, so the hosts share the load. A case that is not
  uploaded yet goes to another host when its host cannot be reached; cases
  already uploaded or running stay with their host and go on when it is back.
  Each host is asked about its running jobs with one command per poll.

  Background:
    Given two GPU hosts, "north" and "south", each with 2 slots of gpu_a, reached over SSH
    And caseflow is running

  Scenario: Two hosts share the load
    When 4 case folders whose jobs wait to be released are dropped into the inbox
    Then 2 of the cases run on "north" and 2 on "south"
    And caseflow status shows the host of each case
    And caseflow resources shows which case holds each slot of each host
    When all jobs are released
    Then all 4 cases end in success
    And each case was run exactly once, on the host that shows for it

  Scenario: A host stops; new cases go to the other, and no case is lost or run twice
    Given 2 case folders whose jobs wait to be released were dropped into the inbox
    And one of them runs on "north" and the other on "south"
    When the GPU host "north" cannot be reached any more
    And 3 case folders whose jobs wait to be released are dropped into the inbox
    Then the 3 new cases go to "south" as its slots allow, none to "north"
    When the GPU host "north" can be reached again
    And all jobs are released
    Then all 5 cases end in success
    And each case was run exactly once, on the host that shows for it
